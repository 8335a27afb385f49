"""Tabular softmax policy: one row of logits [K] per prompt, exact and vectorised.

A response is a single token (the index of one of K candidate answers), so it runs
through exactly the same loss and aggregation code as a language model with T = 1. Its
text is the chosen candidate's string, which is what tasks read.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import torch
from torch import nn

from algorithms.registry import ConfigError, integer, one_of
from policies.base import PromptBatch, Rollout
from policies.registry import POLICIES


@attrs.frozen
class TabularParams:
    num_prompts: int = attrs.field(validator=integer(1))
    """P_total: rows of the logit table (one per prompt of the problem source)."""
    num_answers: int = attrs.field(validator=integer(2))
    """K: candidate answers per prompt."""


class AnswerTablePolicy(nn.Module):
    """pi(a | prompt i) = softmax(logit_table()[i])[a] over K candidate answers per prompt.

    What every policy over a table of logits [P_total, K] shares: sampling, exact log-probs,
    the answer distribution (``AnswerDistribution``) and the export. A subclass registers its
    parameters and defines ``logit_table``; ``freeze_reference`` then keeps the initial table
    as the KL penalty's reference. ``weights`` and ``logit_table(weights)`` are what the batched
    simulator stacks over runs (``experiments.sim.batched``).
    """

    max_new_tokens = 1
    """A response is one token: the generation budget is 1 (Dr.GRPO's L_max, DAPO's limits)."""
    multi_process = False
    """One process: many tabular runs at once go through experiments.sim (batched) or sweeps."""

    def __init__(self, shape: tuple[int, int], candidates: tuple[tuple[str, ...], ...] | None = None):
        super().__init__()
        if candidates is None:
            candidates = (tuple(str(a) for a in range(shape[1])),) * shape[0]
        if len(candidates) != shape[0] or any(len(c) != shape[1] for c in candidates):
            raise ValueError(f"candidates must be {shape[0]} rows of {shape[1]} answer texts")
        self.candidates = candidates

    def weights(self) -> dict[str, nn.Parameter]:
        """The trainable tensors by name (what ``logit_table`` reads)."""
        return dict(self.named_parameters())

    def logit_table(self, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[..., P_total, K] logits from ``weights`` (default: this policy's own), with grad;
        written for leading run dimensions ([R, ...] weights give [R, P_total, K])."""
        raise NotImplementedError

    def freeze_reference(self) -> None:
        """The reference policy of the KL penalty: the initial logit table, frozen (a small buffer)."""
        with torch.no_grad():
            self.register_buffer("ref_logits", self.logit_table().detach().clone())

    def probs(self, prompt_index: torch.Tensor | None = None) -> torch.Tensor:
        """[P, K] answer distribution (all prompts when ``prompt_index`` is None), no grad."""
        with torch.no_grad():
            logits = self.logit_table() if prompt_index is None else self.logit_table()[prompt_index]
            return torch.softmax(logits, dim=-1)

    @torch.no_grad()
    def sample(self, prompts: PromptBatch, group_size: int, generator: torch.Generator) -> Rollout:
        logp_all = torch.log_softmax(self.logit_table()[prompts.index], dim=-1)  # (P, K)
        answers = torch.multinomial(logp_all.exp(), group_size, replacement=True, generator=generator)  # (P, G)
        logp = logp_all.gather(1, answers)  # (P, G)
        prompt_index = prompts.index.repeat_interleave(group_size)  # (B,)
        b = answers.numel()
        return Rollout(
            prompt_index=prompt_index,
            prompt_tokens=torch.zeros(b, 0, dtype=torch.long),  # the prompt is the table row
            prompt_mask=torch.zeros(b, 0),
            tokens=answers.reshape(-1, 1),  # (B, 1)
            mask=torch.ones(b, 1),
            old_logp=logp.reshape(-1, 1),
            texts=tuple(self.candidates[i][a] for i, a in zip(prompt_index.tolist(), answers.reshape(-1).tolist())),
            group_size=group_size,
            truncated=torch.zeros(b, dtype=torch.bool),  # an answer choice is always complete
        )

    def logprobs(self, rollout: Rollout) -> torch.Tensor:
        logp_all = torch.log_softmax(self.logit_table()[rollout.prompt_index], dim=-1)  # (B, K)
        return logp_all.gather(1, rollout.tokens)  # (B, 1)

    def ref_logprobs(self, rollout: Rollout) -> torch.Tensor:
        return torch.log_softmax(self.ref_logits[rollout.prompt_index], dim=-1).gather(1, rollout.tokens)  # (B, 1)

    def sync_sampler(self) -> None:
        """The policy samples from its own parameters: nothing to push."""

    def entropy(self, prompt_index: torch.Tensor) -> torch.Tensor:
        """[P] entropy of the answer distribution of each prompt, no grad."""
        p = self.probs(prompt_index)
        return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)

    def save_model(self, path: Path) -> None:
        """The final table: ``path/table.pt`` with the logits [P_total, K], the candidate texts
        and any other weights or fixed tensors they are made of."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        extra = {k: v.detach().clone() for k, v in self.state_dict().items() if k not in ("logits", "ref_logits")}
        torch.save({"logits": self.logit_table().detach().clone(), "candidates": self.candidates, **extra},
                   path / "table.pt")


class TabularPolicy(AnswerTablePolicy):
    """pi(a | prompt i) = softmax(logits[i])[a]; logits [P_total, K] are the parameters."""

    def __init__(self, params: TabularParams, init_logits: torch.Tensor | None = None,
                 candidates: tuple[tuple[str, ...], ...] | None = None):
        shape = (params.num_prompts, params.num_answers)
        super().__init__(shape, candidates)
        self.logits = nn.Parameter(check_logits(init_logits, shape).clone().float())
        self.freeze_reference()

    def logit_table(self, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.logits if weights is None else weights["logits"]


def check_logits(init_logits: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
    """``init_logits`` [P_total, K] checked (finite, that shape); zeros when None."""
    if init_logits is None:
        return torch.zeros(shape)
    if tuple(init_logits.shape) != shape:
        raise ValueError(f"init_logits has shape {tuple(init_logits.shape)}, expected {shape}")
    if not torch.isfinite(init_logits).all():
        raise ValueError("init_logits must be finite")
    return init_logits


@attrs.frozen
class TabularInit:
    init: str = attrs.field(default="task", validator=one_of("task", "uniform"))
    """Initial logits: "task" (the problem source's, giving each prompt its initial p) or "uniform"."""
    max_new_tokens: int = attrs.field(default=1, validator=one_of(1))
    """The generation budget: a tabular response is exactly one token."""


@POLICIES.register("tabular", TabularInit)
def tabular_policy(task, reference: bool = False, *, init: str, max_new_tokens: int) -> TabularPolicy:
    """Tabular softmax over the task's candidate answers (exact, vectorised).

    The reference of the KL penalty (the initial logits) is a small buffer, kept either way.
    """
    table, candidates = answer_table(task, "tabular")
    return TabularPolicy(table, task.initial_logits if init == "task" else None, candidates)


def answer_table(task, policy: str) -> tuple[TabularParams, tuple[tuple[str, ...], ...]]:
    """The shape (P_total, K) and candidate texts of ``task``; a ConfigError naming ``policy``
    for a task without candidate answers."""
    candidates = getattr(task, "candidates", None)
    if candidates is None:
        raise ConfigError(f"policy={policy} needs a task with candidate answers (env=bandit or env=arithmetic); "
                          f"env {task.name!r} has none: use a language-model policy")
    num_prompts, num_answers = task.initial_logits.shape
    return TabularParams(num_prompts=num_prompts, num_answers=num_answers), candidates
