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
    scored: torch.Tensor | None = None
    """[N, G] bool: the responses some reward function scored; None: all of them (``rewards`` is
    NaN where one is unscorable)."""
    by_function: dict[str, torch.Tensor] = attrs.field(factory=dict)
    """name -> [N, G] each reward function's values (NaN where it returned None)."""


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


def fill_unscorable(rewards: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """[N, G] rewards with each unscorable entry (``~scored``) replaced by the mean of its group's
    scored ones (a group's mean, min and max are then those of its scored responses); a group
    with none scored gets the step's scored mean (0 where nothing was scored)."""
    zero = torch.zeros((), dtype=rewards.dtype)
    values = torch.where(scored, rewards, zero)
    counts = scored.sum(-1, keepdim=True)  # (N, 1)
    overall = values.sum() / scored.sum().clamp_min(1)
    group = torch.where(counts > 0, values.sum(-1, keepdim=True) / counts.clamp_min(1), overall)  # (N, 1)
    return torch.where(scored, rewards, group.expand_as(rewards))


def scorable_advantage(advantage, rewards: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """[N, G] advantages of the scored responses against their group's scored ones alone, 0 for
    unscorable responses (and for a group with fewer than 2 scored: no baseline). ``advantage``
    (rewards [n, k] -> [n, k], one group per row) runs once per count k of scored responses."""
    out = torch.zeros_like(rewards)
    counts = scored.sum(-1)  # (N,)
    for k in sorted(set(counts.tolist()) - {0, 1}):
        rows = (counts == k).nonzero().squeeze(1)
        mask = scored[rows]  # (n, G), k True per row
        block = torch.zeros(len(rows), rewards.shape[-1], dtype=rewards.dtype)
        block[mask] = advantage(rewards[rows][mask].view(len(rows), k)).reshape(-1).to(rewards.dtype)
        out[rows] = block
    return out
