"""The groups of one step: every process's (``StepGroups``, the group maths runs on these) and
this process's own (``LocalGroups``, the responses it sampled and trains on)."""

from __future__ import annotations

import attrs
import torch

from policies.base import PromptBatch, Rollout


@attrs.frozen
class StepGroups:
    """Every process's groups of one step, N >= P (N > P only with extra filter rounds): the
    group maths (advantages, reweighter state, metrics) runs on these, identically everywhere."""

    rewards: torch.Tensor
    """[N, G] verifier rewards, before shaping (accuracy metrics use these)."""
    lengths: torch.Tensor
    """[N, G] response lengths in tokens."""
    buckets: torch.Tensor
    """[N] difficulty bucket of each group's prompt."""
    p_true: torch.Tensor | None
    """[N] exact success probabilities at sampling time, where the task knows them."""
    train: torch.Tensor
    """[N] bool: the groups that enter the update (the first P kept by the filter)."""
    stats: dict[str, torch.Tensor]
    """sampling/* metrics."""


@attrs.frozen
class LocalGroups:
    """The groups this process sampled (all N on one process), in ``rollout`` order."""

    index: torch.Tensor
    """[N_local] their indices into the step's N groups."""
    prompts: PromptBatch
    """[N_local] their prompts."""
    rollout: Rollout
    """[N_local * G] their responses."""

    def training_rollout(self, groups: StepGroups, advantages: torch.Tensor) -> Rollout:
        """This process's share of the groups that enter the update, with their ``advantages``
        ([N, G], every process's groups)."""
        mine = groups.train[self.index].nonzero().squeeze(1)  # (n_local,) rows of this process's groups
        return self.rollout.select_groups(mine).with_(advantages=advantages[self.index[mine]].reshape(-1))
