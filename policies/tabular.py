"""Tabular softmax policy: one row of logits [K] per prompt, exact and vectorised.

A response is a single token (the index of one of K candidate answers), so it runs
through exactly the same loss and aggregation code as a language model with T = 1.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

from algorithms.registry import Registry, integer, one_of
from policies.base import PromptBatch, Rollout


@attrs.frozen
class TabularParams:
    num_prompts: int = attrs.field(validator=integer(1))
    """P_total: rows of the logit table (one per prompt of the problem source)."""
    num_answers: int = attrs.field(validator=integer(2))
    """K: candidate answers per prompt."""


class TabularPolicy(nn.Module):
    """pi(a | prompt i) = softmax(logits[i])[a]; logits [P_total, K] are the parameters."""

    def __init__(self, params: TabularParams, init_logits: torch.Tensor | None = None):
        super().__init__()
        shape = (params.num_prompts, params.num_answers)
        if init_logits is None:
            init_logits = torch.zeros(shape)
        if tuple(init_logits.shape) != shape:
            raise ValueError(f"init_logits has shape {tuple(init_logits.shape)}, expected {shape}")
        if not torch.isfinite(init_logits).all():
            raise ValueError("init_logits must be finite")
        self.logits = nn.Parameter(init_logits.clone().float())
        # The reference policy of the KL penalty: the initial logits, frozen.
        self.register_buffer("ref_logits", init_logits.clone().float())

    def probs(self, prompt_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[P, K] answer distribution (all prompts when ``prompt_ids`` is None), no grad."""
        with torch.no_grad():
            logits = self.logits if prompt_ids is None else self.logits[prompt_ids]
            return torch.softmax(logits, dim=-1)

    @torch.no_grad()
    def sample(self, prompts: PromptBatch, group_size: int, generator: torch.Generator) -> Rollout:
        logp_all = torch.log_softmax(self.logits[prompts.ids], dim=-1)  # (P, K)
        answers = torch.multinomial(logp_all.exp(), group_size, replacement=True, generator=generator)  # (P, G)
        logp = logp_all.gather(1, answers)  # (P, G)
        return Rollout(
            tokens=answers.reshape(-1, 1),  # (B, 1)
            mask=torch.ones(answers.numel(), 1),
            logp=logp.reshape(-1, 1),
            prompt_ids=prompts.ids.repeat_interleave(group_size),  # (B,)
            group_size=group_size,
        )

    def logprobs(self, rollout: Rollout) -> torch.Tensor:
        logp_all = torch.log_softmax(self.logits[rollout.prompt_ids], dim=-1)  # (B, K)
        return logp_all.gather(1, rollout.tokens)  # (B, 1)

    def ref_logprobs(self, rollout: Rollout) -> torch.Tensor:
        return torch.log_softmax(self.ref_logits[rollout.prompt_ids], dim=-1).gather(1, rollout.tokens)  # (B, 1)

    def entropy(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """[P] entropy of the answer distribution of each prompt, no grad."""
        p = self.probs(prompt_ids)
        return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)



POLICIES = Registry("policy", "(task) -> Policy")


@attrs.frozen
class TabularInit:
    init: str = attrs.field(default="task", validator=one_of("task", "uniform"))
    """Initial logits: "task" (the problem source's, giving each prompt its initial p) or "uniform"."""


@POLICIES.register("tabular", TabularInit)
def tabular_policy(task, *, init: str) -> TabularPolicy:
    """Tabular softmax over the task's candidate answers (exact, vectorised)."""
    num_prompts, num_answers = task.initial_logits.shape
    logits = task.initial_logits if init == "task" else None
    return TabularPolicy(TabularParams(num_prompts=num_prompts, num_answers=num_answers), logits)
