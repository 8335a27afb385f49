"""The policy protocol shared by every backend (tabular, transformers, vLLM).

A policy samples G responses per prompt and scores sampled responses. The trainer
only uses this protocol, so it never knows which backend it drives.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs
import torch


@attrs.frozen
class PromptBatch:
    """The P prompts of one step."""

    ids: torch.Tensor
    """[P] long: index of each prompt in its problem source (row of the tabular policy)."""
    texts: tuple[str, ...]
    """[P] prompt strings (what a language model reads)."""

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @staticmethod
    def concat(batches: list["PromptBatch"]) -> "PromptBatch":
        return PromptBatch(ids=torch.cat([b.ids for b in batches]), texts=sum((b.texts for b in batches), ()))


@attrs.frozen
class Rollout:
    """B = P * G sampled responses, prompt-major: response b answers prompt b // G."""

    tokens: torch.Tensor
    """[B, T] long: response token ids (for the tabular policy, T = 1: the answer index)."""
    mask: torch.Tensor
    """[B, T] float: 1 on response tokens, 0 on padding."""
    logp: torch.Tensor
    """[B, T] float: log-probabilities of the tokens under the sampling policy (detached)."""
    prompt_ids: torch.Tensor
    """[B] long: source index of the prompt each response answers."""
    group_size: int
    """G."""
    texts: tuple[str, ...] = ()
    """[B] decoded completions (what a verifier reads); empty where not needed."""

    def select(self, index: torch.Tensor, group_size: int = 1) -> "Rollout":
        """Responses ``index`` [b] (a minibatch, or whole groups with ``group_size``)."""
        texts = tuple(self.texts[i] for i in index.tolist()) if self.texts else ()
        return attrs.evolve(
            self,
            tokens=self.tokens[index],
            mask=self.mask[index],
            logp=self.logp[index],
            prompt_ids=self.prompt_ids[index],
            group_size=group_size,
            texts=texts,
        )

    def select_groups(self, groups: torch.Tensor) -> "Rollout":
        """The G responses of each group in ``groups`` [n], in that order."""
        g = self.group_size
        index = (groups[:, None] * g + torch.arange(g, device=groups.device)).reshape(-1)  # (n * G,)
        return self.select(index, group_size=g)

    @staticmethod
    def concat(rollouts: list["Rollout"]) -> "Rollout":
        """Stack rollouts of the same group size, right-padding tokens to the longest T."""
        if len(rollouts) == 1:
            return rollouts[0]
        width = max(r.tokens.shape[1] for r in rollouts)
        pad = lambda x: torch.nn.functional.pad(x, (0, width - x.shape[1]))  # noqa: E731
        return Rollout(
            tokens=torch.cat([pad(r.tokens) for r in rollouts]),
            mask=torch.cat([pad(r.mask) for r in rollouts]),
            logp=torch.cat([pad(r.logp) for r in rollouts]),
            prompt_ids=torch.cat([r.prompt_ids for r in rollouts]),
            group_size=rollouts[0].group_size,
            texts=sum((r.texts for r in rollouts), ()),
        )


@runtime_checkable
class Policy(Protocol):
    """What the trainer needs from a policy backend."""

    def sample(self, prompts: PromptBatch, group_size: int, generator: torch.Generator) -> Rollout:
        """Draw ``group_size`` responses per prompt; B = P * G, prompt-major."""
        ...

    def logprobs(self, rollout: Rollout) -> torch.Tensor:
        """[B, T] log-probabilities of ``rollout.tokens`` under the current parameters (with grad)."""
        ...

    def ref_logprobs(self, rollout: Rollout) -> torch.Tensor:
        """[B, T] log-probabilities under the frozen reference policy (for the KL penalty)."""
        ...

    def parameters(self):  # torch.nn.Module.parameters
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict): ...
