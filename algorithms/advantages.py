"""Group-relative advantage estimators: rewards [P, G] -> advantages [P, G].

Every estimator sees only one group's rewards at a time (vectorised over the P
groups). A degenerate group (all rewards equal) gets zero advantage. Leading dimensions
are independent runs: rewards [R, P, G] -> advantages [R, P, G] (the batched simulator).
"""

from __future__ import annotations

import attrs
import torch

from algorithms.registry import Registry, ge

ADVANTAGES = Registry("advantage", "rewards [P, G] -> advantages [P, G]")


def zero_degenerate(advantages: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Exact zeros for groups whose rewards are all equal.

    In floating point mean(r) can differ from r by an ulp for non-binary rewards, and
    dividing that residue by (std + eps) would give a small non-zero "advantage".
    """
    degenerate = rewards.amax(dim=-1, keepdim=True) == rewards.amin(dim=-1, keepdim=True)  # (..., P, 1)
    return advantages.masked_fill(degenerate, 0.0)


@attrs.frozen
class GroupNormParams:
    eps: float = attrs.field(default=1e-6, validator=ge(0.0))
    """Added to the group std before dividing (GRPO: 1e-6)."""


@ADVANTAGES.register("group_norm", GroupNormParams)
def group_norm_advantage(rewards: torch.Tensor, *, eps: float) -> torch.Tensor:
    """GRPO (Shao et al. 2024): (r - mean) / (std + eps), Bessel-corrected std per group."""
    mean = rewards.mean(dim=-1, keepdim=True)  # (..., P, 1)
    std = rewards.std(dim=-1, keepdim=True, unbiased=True)  # (..., P, 1)
    return zero_degenerate((rewards - mean) / (std + eps), rewards)


@ADVANTAGES.register("group_mean")
def group_mean_advantage(rewards: torch.Tensor) -> torch.Tensor:
    """Dr.GRPO (Liu et al. 2025): r - mean, no std normalisation."""
    return zero_degenerate(rewards - rewards.mean(dim=-1, keepdim=True), rewards)
