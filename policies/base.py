"""The shapes every policy backend shares (tabular, transformers, vLLM, several processes).

A policy samples G responses per prompt and scores sampled responses. The trainer
only uses the ``Policy`` protocol, so it never knows which backend it drives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs
import torch

# How a [B, L] tensor field of ``Rollout`` is padded when rollouts of different widths are
# concatenated: response fields on the right, prompt fields on the left (causal-LM layout).
PAD = "pad"


@attrs.frozen
class PromptBatch:
    """The P prompts of one step."""

    index: torch.Tensor
    """[P] long: row of each prompt in its problem source."""
    texts: tuple[str, ...]
    """[P] prompt strings (what a language model reads)."""

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def select(self, rows: slice | torch.Tensor) -> "PromptBatch":
        """The prompts ``rows`` (a slice, or [n] long indices), in that order."""
        if isinstance(rows, slice):
            return PromptBatch(index=self.index[rows], texts=self.texts[rows])
        return PromptBatch(index=self.index[rows], texts=tuple(self.texts[i] for i in rows.tolist()))

    @staticmethod
    def concat(batches: list["PromptBatch"]) -> "PromptBatch":
        return PromptBatch(index=torch.cat([b.index for b in batches]), texts=sum((b.texts for b in batches), ()))


def _tensor(pad: str | None = None, optional: bool = False):
    kwargs = {"default": None} if optional else {}
    return attrs.field(metadata={PAD: pad, "batched": True}, **kwargs)


@attrs.frozen
class Rollout:
    """B = P * G sampled responses, prompt-major: response b answers prompt b // G.

    Every tensor field is batched along dim 0 ([B, ...]); ``select``, ``split``,
    ``concat`` and ``to`` handle them generically, so a new field needs no new code.
    ``old_logp`` is the PPO ratio's denominator: the *training* weights' log-probs at
    sampling time. ``sampler_logp`` is what a separate generation engine (vLLM) reported
    for the same tokens; it differs from ``old_logp`` by the engine's numerics.
    """

    prompt_index: torch.Tensor = _tensor()
    """[B] long: row of the prompt each response answers, in its problem source."""
    prompt_tokens: torch.Tensor = _tensor(pad="left")
    """[B, S] long: prompt token ids, left-padded ([B, 0] for the tabular policy)."""
    prompt_mask: torch.Tensor = _tensor(pad="left")
    """[B, S] float: 1 on prompt tokens, 0 on padding."""
    tokens: torch.Tensor = _tensor(pad="right")
    """[B, T] long: response token ids, right-padded (tabular: T = 1, the answer index)."""
    mask: torch.Tensor = _tensor(pad="right")
    """[B, T] float: 1 on response tokens, 0 on padding."""
    old_logp: torch.Tensor = _tensor(pad="right")
    """[B, T] float: log-probs of ``tokens`` under the training weights at sampling time (detached)."""
    texts: tuple[str, ...] = attrs.field(metadata={"batched": True})
    """[B] the completions as text, always filled (tabular: the chosen candidate's text)."""
    group_size: int = attrs.field()
    """G."""
    sampler_logp: torch.Tensor | None = _tensor(pad="right", optional=True)
    """[B, T] log-probs reported by a separate generation engine (vLLM); None otherwise."""
    ref_logp: torch.Tensor | None = _tensor(pad="right", optional=True)
    """[B, T] reference-policy log-probs, filled once per step when the KL penalty is on."""
    advantages: torch.Tensor | None = _tensor(optional=True)
    """[B] per-response advantage after reweighting, set by the trainer."""
    entropy: torch.Tensor | None = _tensor(pad="right", optional=True)
    """[B, T] entropy of the sampling distribution at each response token (text policies; logged)."""
    truncated: torch.Tensor | None = _tensor(optional=True)
    """[B] bool: cut at the generation budget before a stop token (text policies; logged)."""

    def __attrs_post_init__(self):
        b = len(self.texts)
        for f in _batched_fields():
            value = getattr(self, f.name)
            if value is not None and len(value) != b:
                raise ValueError(f"Rollout.{f.name} has {len(value)} rows, texts has {b}")

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, index: torch.Tensor, group_size: int = 1) -> "Rollout":
        """Responses ``index`` [b] (a minibatch; whole groups in order with ``group_size``)."""
        rows = index.tolist()
        return attrs.evolve(self, group_size=group_size, **{
            f.name: _take(getattr(self, f.name), index, rows) for f in _batched_fields()})

    def select_groups(self, groups: torch.Tensor) -> "Rollout":
        """The G responses of each group in ``groups`` [n], in that order."""
        g = self.group_size
        index = (groups[:, None] * g + torch.arange(g, device=groups.device)).reshape(-1)  # (n * G,)
        return self.select(index, group_size=g)

    def split(self, size: int) -> list["Rollout"]:
        """Consecutive chunks of at most ``size`` responses (micro-batches)."""
        if size < 1:
            raise ValueError(f"split size must be >= 1, got {size}")
        n = len(self)
        return [self.select(torch.arange(i, min(i + size, n)), self.group_size if size % self.group_size == 0 else 1)
                for i in range(0, n, size)]

    def to(self, device: torch.device | str) -> "Rollout":
        return attrs.evolve(self, **{f.name: getattr(self, f.name).to(device) for f in _batched_fields()
                                     if isinstance(getattr(self, f.name), torch.Tensor)})

    def with_(self, **changes) -> "Rollout":
        """A copy with some fields replaced (e.g. ``advantages``, ``ref_logp``)."""
        return attrs.evolve(self, **changes)

    @staticmethod
    def concat(rollouts: list["Rollout"]) -> "Rollout":
        """Stack rollouts of the same group size; [B, L] fields are padded to the widest L
        (responses on the right, prompts on the left). An optional field stays None unless
        every part has it."""
        if len(rollouts) == 1:
            return rollouts[0]
        fields = {}
        for f in _batched_fields():
            parts = [getattr(r, f.name) for r in rollouts]
            if any(p is None for p in parts):
                if not all(p is None for p in parts):
                    raise ValueError(f"Rollout.concat: field {f.name} is set on some rollouts only")
                fields[f.name] = None
            elif isinstance(parts[0], tuple):
                fields[f.name] = sum(parts, ())
            else:
                fields[f.name] = torch.cat(_pad_to_widest(parts, f.metadata[PAD]))
        return Rollout(group_size=rollouts[0].group_size, **fields)


def _batched_fields():
    return [f for f in attrs.fields(Rollout) if f.metadata.get("batched")]


def _take(value, index: torch.Tensor, rows: list[int]):
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(value[i] for i in rows)
    return value[index.to(value.device)]


def _pad_to_widest(parts: list[torch.Tensor], side: str | None) -> list[torch.Tensor]:
    if side is None or parts[0].dim() < 2:
        return parts
    width = max(p.shape[1] for p in parts)
    out = []
    for p in parts:
        missing = width - p.shape[1]
        pad = (0, missing) if side == "right" else (missing, 0)
        out.append(torch.nn.functional.pad(p, pad) if missing else p)
    return out


@runtime_checkable
class Policy(Protocol):
    """What the trainer needs from a policy backend. The policy owns its model,
    tokenizer, chat template and device."""

    max_new_tokens: int
    """The generation budget (Dr.GRPO's L_max and DAPO's overlong limits interpolate it)."""
    multi_process: bool
    """Whether several data-parallel processes may drive it: each holds the same weights and
    samples its share of the groups (``experiments.parallel.engine.DistributedEngine``)."""

    def sample(self, prompts: PromptBatch, group_size: int, generator: torch.Generator) -> Rollout:
        """Draw ``group_size`` responses per prompt; B = P * G, prompt-major, ``old_logp`` filled."""
        ...

    def logprobs(self, rollout: Rollout) -> torch.Tensor:
        """[B, T] log-probs of ``rollout.tokens`` under the current parameters (with grad),
        a pure function of the rollout."""
        ...

    def ref_logprobs(self, rollout: Rollout) -> torch.Tensor:
        """[B, T] log-probs under the frozen reference policy (no grad; for the KL penalty)."""
        ...

    def sync_sampler(self) -> None:
        """Push new weights into a separate generation engine (vLLM); a no-op otherwise."""
        ...

    def parameters(self):  # torch.nn.Module.parameters
        ...

    def state_dict(self) -> dict:
        """The trainable state a checkpoint holds (a resumed run continues exactly)."""
        ...

    def load_state_dict(self, state: dict): ...

    def save_model(self, path: Path) -> None:
        """Write the final model under the folder ``path`` (transformers: ``from_pretrained(path)`` loads it)."""
        ...


@runtime_checkable
class AnswerDistribution(Protocol):
    """A policy whose whole answer distribution over K candidates is known (tabular):
    tasks that know which candidates are correct then give exact success probabilities."""

    def probs(self, prompt_index: torch.Tensor | None = None) -> torch.Tensor:
        """[P, K] answer distribution (all prompts when ``prompt_index`` is None), no grad."""
        ...
