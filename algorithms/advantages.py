"""Group-relative advantage estimators: rewards [P, G] -> advantages [P, G].

Group-local estimators (group_norm, group_mean, rloo, passk, maxrl, optimal_baseline) see one
group's rewards at a time (vectorised over the P groups); batch estimators (reinforce_pp:
the batch std; shrinkage: the batch mean and the spread of group means) also see the other
groups of the step. A degenerate group (all rewards equal) gets zero advantage from every
estimator (shrinkage: unless keep_degenerate). Leading dimensions are independent runs:
rewards [R, P, G] -> advantages [R, P, G] (the batched simulator); batch statistics are per run.
"""

from __future__ import annotations

import functools
import math

import attrs
import torch

from algorithms.registry import ConfigError, Registry, ge, gt, integer

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


def others_mean(rewards: torch.Tensor) -> torch.Tensor:
    """[..., P, G] the mean of the other G - 1 rewards of each response's group (leave-one-out)."""
    g = rewards.shape[-1]
    return (rewards.sum(dim=-1, keepdim=True) - rewards) / max(g - 1, 1)


@ADVANTAGES.register("rloo")
def rloo_advantage(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free!"; Ahmadian et
    al. 2024, arXiv:2402.14740): r_i - mean_{j != i} r_j = G / (G - 1) (r_i - mean).

    The baseline never sees the response it centres, so the policy gradient is unbiased (verl's
    ``compute_rloo_outcome_advantage``). A group of one response has no baseline: zero here."""
    return zero_degenerate(rewards - others_mean(rewards), rewards)


@attrs.frozen
class ReinforcePPParams:
    eps: float = attrs.field(default=1e-8, validator=ge(0.0))
    """Added to the batch variance under the square root (verl's ``masked_whiten``: 1e-8)."""


@ADVANTAGES.register("reinforce_pp", ReinforcePPParams)
def reinforce_pp_advantage(rewards: torch.Tensor, *, eps: float) -> torch.Tensor:
    """REINFORCE++ with a group baseline (Hu 2025, arXiv:2501.03262): the group mean is
    subtracted, then the whole batch is whitened: (x - mean_B) / sqrt(var_B + eps) with mean and
    Bessel-corrected variance over all P * G responses of the step.

    verl's ``compute_reinforce_plus_plus_baseline_outcome_advantage`` does exactly this, except
    that its whitening (``masked_whiten``) runs over tokens, so each response counts once per
    token; this stage sees rewards only and counts every response once (the same on the tabular
    policy, one token per response). A batch estimator: every response's scale depends on the
    other groups. Degenerate groups get exact zeros (verl: rounding residue of the shift)."""
    if rewards.shape[-1] * rewards.shape[-2] < 2:  # one response: no batch variance (and a degenerate group)
        return torch.zeros_like(rewards)
    centered = rewards - rewards.mean(dim=-1, keepdim=True)  # (..., P, G)
    flat = centered.flatten(-2)  # (..., P * G): the batch of one run
    mean = flat.mean(dim=-1, keepdim=True)[..., None]  # (..., 1, 1)
    var = flat.var(dim=-1, unbiased=True, keepdim=True)[..., None]  # (..., 1, 1)
    return zero_degenerate((centered - mean) * torch.rsqrt(var + eps), rewards)


@attrs.frozen
class PassKParams:
    k: int = attrs.field(default=4, validator=integer(1))
    """Samples per pass@k attempt, 1 <= k <= G (train.group_size, checked at build time); 1 is RLOO."""

    def check_group_size(self, group_size: int, where: str) -> None:
        if self.k > group_size:
            raise ConfigError(f"{where}.k: pass@k needs 1 <= k <= G; got k={self.k} with train.group_size={group_size}")


@functools.lru_cache(maxsize=64)
def passk_weights(g: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[G, G] matrices over rewards sorted ascending: row j of the first gives response j's
    PKPO reward s_j (the mean max over the k-subsets holding j), of the second the pass@k'
    estimate of the other G - 1 responses, k' = min(k, G - 1) (their mean max over k'-subsets)."""
    kb = min(k, g - 1)
    s, b = torch.zeros(g, g, dtype=torch.float64), torch.zeros(g, g, dtype=torch.float64)
    for j in range(g):  # 0-based ranks: j has j responses below it
        s[j, j] = math.comb(j, k - 1)  # subsets where j is the max
        for m in range(j + 1, g):
            s[j, m] = math.comb(m - 1, k - 2) if k >= 2 else 0.0  # m is the max, j among the rest
            b[j, m] = math.comb(m - 1, kb - 1)  # rank m becomes m - 1 once j is removed
        for m in range(j):
            b[j, m] = math.comb(m, kb - 1)
    return s / math.comb(g - 1, k - 1), b / max(math.comb(g - 1, kb), 1)


@ADVANTAGES.register("passk", PassKParams)
def passk_advantage(rewards: torch.Tensor, *, k: int) -> torch.Tensor:
    """Pass@k advantage (PKPO, Walder & Karkhanis 2025, arXiv:2505.15201): k (s_i - b_i) with s_i
    the mean of max(r) over the k-subsets of the group that hold response i (binary rewards: 1
    if correct, else the pass@(k-1) estimate of the others, PKPO's transformed reward times G/k)
    and b_i the unbiased pass@k estimate of the other G - 1 responses (pass@(G-1) at k = G).

    b_i never sees response i, so E[A | r] = k (1 - p)^(k-1) (r - p) (k = G: up to a constant):
    the exact pass@k gradient's advantage. k = 1 is RLOO; k = G gives G (r_max - r_second) to the best response
    alone, which is verl's ``grpo_passk`` (arXiv:2503.19595, without its std division) times G.
    Continuous rewards: PKPO's max@k. A group smaller than k (unscorable responses dropped)
    uses k = its size."""
    g = rewards.shape[-1]
    k = min(k, g)
    if g < 2:
        return torch.zeros_like(rewards)
    s, b = (w.to(rewards.dtype) for w in passk_weights(g, k))
    ordered, order = rewards.sort(dim=-1, stable=True)  # (..., P, G) ascending
    sorted_adv = k * (ordered @ s.T - ordered @ b.T)  # (..., P, G)
    return zero_degenerate(torch.zeros_like(rewards).scatter(-1, order, sorted_adv), rewards)


@attrs.frozen
class MaxRLParams:
    eps: float = attrs.field(default=1e-6, validator=ge(0.0))
    """Groups whose mean reward is at most eps get zero advantage (binary: no success)."""


@ADVANTAGES.register("maxrl", MaxRLParams)
def maxrl_advantage(rewards: torch.Tensor, *, eps: float) -> torch.Tensor:
    """MaxRL (Tajwar et al. 2026, "Maximum Likelihood Reinforcement Learning", arXiv:2602.02710):
    (r - p_hat) / p_hat, GRPO with the group mean in place of the std, on groups with p_hat > 0.

    Its G r / c part (c successes: the mean score over a group's successes) is unbiased for the
    gradient of sum_{k=1..G} pass@k / k, the order-G truncation of log p (maximum likelihood);
    hard prompts weigh ~1/p. The -1 is a baseline only on solved groups, which shifts the gap
    E[A | r=1] - E[A | r=0] by -(1 - p)^(G-1) (algorithms.theory_estimators). Rewards in [0, 1]
    (binary in the paper)."""
    mean = rewards.mean(dim=-1, keepdim=True)  # (..., P, 1)
    solved = mean > eps
    adv = torch.where(solved, (rewards - mean) / torch.where(solved, mean, torch.ones_like(mean)), 0.0)
    return zero_degenerate(adv, rewards)


@attrs.frozen
class ShrinkageParams:
    keep_degenerate: bool = False
    """Give groups whose rewards all agree r - baseline too (their baseline differs from their
    common reward); false: zero, like every other estimator."""


@ADVANTAGES.register("shrinkage", ShrinkageParams)
def shrinkage_advantage(rewards: torch.Tensor, *, keep_degenerate: bool) -> torch.Tensor:
    """Cross-prompt shrinkage baseline (James-Stein / empirical Bayes, Efron & Morris 1975;
    for RLVR Zeng et al. 2025, arXiv:2511.03710): r - (w p_hat + (1 - w) m), m the batch mean.

    w = 1 - sigma2 / V clipped to [0, 1]: V the variance of the P group means around m (Bessel),
    sigma2 the mean over groups of their sampling variance s^2 / G (s^2 Bessel within a group),
    so w estimates tau^2 / (tau^2 + sigma2), the share of V that is real spread of success
    rates (the method-of-moments coefficient; the paper's exact coefficient is not copied).
    A batch estimator: w and m come from all P groups of the step; one group gives w = 1."""
    g, p = rewards.shape[-1], rewards.shape[-2]
    group = rewards.mean(dim=-1, keepdim=True)  # (..., P, 1)
    batch = group.mean(dim=-2, keepdim=True)  # (..., 1, 1)
    within = (rewards.var(dim=-1, keepdim=True) / g).mean(dim=-2, keepdim=True) if g > 1 else torch.zeros_like(batch)
    between = ((group - batch) ** 2).sum(dim=-2, keepdim=True) / max(p - 1, 1)  # (..., 1, 1)
    weight = torch.where(between > 0, (1 - within / torch.where(between > 0, between, 1.0)).clamp(0, 1), 1.0)
    adv = rewards - (weight * group + (1 - weight) * batch)
    return adv if keep_degenerate else zero_degenerate(adv, rewards)


@attrs.frozen
class OptimalBaselineParams:
    kappa: float = attrs.field(default=1.0, validator=gt(0.0))
    """E[|grad log pi|^2 | correct] / E[|grad log pi|^2 | wrong]; 1 (equal norms) is RLOO."""


@ADVANTAGES.register("optimal_baseline", OptimalBaselineParams)
def optimal_baseline_advantage(rewards: torch.Tensor, *, kappa: float) -> torch.Tensor:
    """Variance-optimal constant baseline (Greensmith, Bartlett & Baxter 2004, JMLR 5):
    b* = E[|g|^2 r] / E[|g|^2], g = grad log pi(y), estimated leave-one-out per group.

    The stage sees rewards only, so |g|^2 enters through one number: kappa, its mean ratio on
    correct vs wrong responses; for binary rewards b* = kappa p / (kappa p + 1 - p), here
    b_i = sum_{j != i} w_j r_j / sum_{j != i} w_j with w = 1 + (kappa - 1) clip(r, 0, 1).
    OPO (Hao et al. 2025, arXiv:2505.23585; verl's ``compute_opo_outcome_advantage``) uses
    response length as |g|^2 (a length-weighted group mean): kappa = mean correct length / mean
    wrong length approximates it. kappa = 1 reduces to RLOO. Leave-one-out keeps the policy
    gradient unbiased for any kappa."""
    weight = 1 + (kappa - 1) * rewards.clamp(0, 1)  # (..., P, G), >= min(1, kappa) > 0
    num = (weight * rewards).sum(dim=-1, keepdim=True) - weight * rewards
    den = weight.sum(dim=-1, keepdim=True) - weight
    return zero_degenerate(rewards - num / den.clamp_min(min(1.0, kappa)), rewards)
