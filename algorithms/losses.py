"""Policy losses: (logp, old_logp, advantages, mask) -> (per-token loss [B, T], stats).

``logp`` and ``old_logp`` are [B, T] log-probabilities of the sampled tokens under the
current and the sampling policy; ``advantages`` is [B, 1] (one value per response,
broadcast over its tokens) or [B, T]; ``mask`` is [B, T] (1 on response tokens).
Stats are detached scalars, reduced over the mask; they are read at logging time only.
"""

from __future__ import annotations

import attrs
import torch

from algorithms.registry import Registry, ge, gt

LOSSES = Registry("loss", "logp, old_logp, advantages, mask -> (per_token [B, T], stats)")

# exp() of a log-ratio beyond this is clamped: one wild token must not produce inf.
MAX_LOG_RATIO = 20.0


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` (values elsewhere, even NaN, are ignored); 0 when empty."""
    keep = mask.bool()
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum() / keep.to(x.dtype).sum().clamp_min(1.0)


def nan_masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` over ``dim`` (None: all dims); NaN (not 0) where the
    mask is empty; values outside the mask (even NaN) are ignored. No host sync."""
    total = torch.sum if dim is None else lambda t: t.sum(dim)
    keep = mask.bool()
    count = total(keep.to(x.dtype))
    mean = total(torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))) / count.clamp_min(1.0)
    return torch.where(count > 0, mean, torch.full_like(mean, float("nan")))


def clipped_surrogate(ratio, advantages, eps_low: float, eps_high: float):
    """max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)) and the clipped-token indicator."""
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    return torch.maximum(pg_loss1, pg_loss2), (pg_loss2 > pg_loss1)


@attrs.frozen
class PPOClipParams:
    eps_low: float = attrs.field(default=0.2, validator=ge(0.0))
    """Lower clip: the ratio is kept above 1 - eps_low (PPO, Schulman et al. 2017)."""
    eps_high: float = attrs.field(default=0.2, validator=ge(0.0))
    """Upper clip: the ratio is kept below 1 + eps_high (DAPO clip-higher uses 0.28)."""
    dual_clip: float | None = attrs.field(default=None, validator=gt(1.0))
    """Dual-clip constant c > 1 bounding the loss for A < 0 (Ye et al. 2020); None = off."""


@LOSSES.register("ppo_clip", PPOClipParams)
def ppo_clip_loss(logp, old_logp, advantages, mask, *, eps_low: float, eps_high: float, dual_clip: float | None):
    """PPO clipped surrogate, per token: max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))."""
    log_ratio = (logp - old_logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)  # (B, T)
    pg_loss, clipped = clipped_surrogate(ratio, advantages, eps_low, eps_high)
    if dual_clip is not None:
        pg_loss3 = -advantages * dual_clip
        pg_loss = torch.where(advantages < 0, torch.minimum(pg_loss, pg_loss3), pg_loss)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean(clipped.float(), mask),
            "approx_kl": masked_mean(0.5 * log_ratio.square(), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return pg_loss, stats


@attrs.frozen
class GSPOParams:
    eps_low: float = attrs.field(default=3e-4, validator=ge(0.0))
    """Lower clip of the sequence ratio s_i (GSPO, Zheng et al. 2025: 3e-4)."""
    eps_high: float = attrs.field(default=4e-4, validator=ge(0.0))
    """Upper clip of the sequence ratio s_i (GSPO: 4e-4)."""


@LOSSES.register("gspo", GSPOParams, aggregations=("seq_mean_token_mean",))
def gspo_loss(logp, old_logp, advantages, mask, *, eps_low: float, eps_high: float):
    """GSPO: clip the sequence ratio s_i = exp(mean_t(logp - old_logp)), in token form.

    Every token of response i carries s_i,t = sg(s_i) * exp(logp_t - sg(logp_t)): its value
    is s_i and its gradient s_i * grad logp_t, so the mean over the response's tokens has
    gradient s_i * grad mean_t(logp_t) = grad s_i, the sequence-level gradient. That holds
    only with seq_mean_token_mean aggregation (enforced by build_algorithm).
    """
    m = mask.to(logp.dtype)
    seq_log_ratio = ((logp - old_logp) * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp_min(1.0)  # (B, 1)
    seq_log_ratio = seq_log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    token_log_ratio = logp - logp.detach() + seq_log_ratio.detach()  # (B, T), value log s_i
    ratio = torch.exp(token_log_ratio)
    pg_loss, clipped = clipped_surrogate(ratio, advantages, eps_low, eps_high)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean(clipped.float(), mask),
            "approx_kl": masked_mean(0.5 * (logp - old_logp).square(), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return pg_loss, stats


@attrs.frozen
class CISPOParams:
    eps_low: float | None = attrs.field(default=None, validator=ge(0.0))
    """Lower bound 1 - eps_low on the IS weight; None = no lower bound (MiniMax-M1)."""
    eps_high: float = attrs.field(default=0.28, validator=ge(0.0))
    """Upper bound 1 + eps_high on the IS weight (MiniMax-M1 tunes only this one)."""


@LOSSES.register("cispo", CISPOParams)
def cispo_loss(logp, old_logp, advantages, mask, *, eps_low: float | None, eps_high: float):
    """CISPO (MiniMax-M1, arXiv:2506.13585): -sg(clip(r, 1 - eps_low, 1 + eps_high)) * A * logp.

    The IS weight is clipped and detached, so no token is dropped from the gradient:
    it flows only through logp.
    """
    log_ratio = (logp - old_logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    lower = None if eps_low is None else 1.0 - eps_low
    weight = torch.clamp(ratio, min=lower, max=1.0 + eps_high).detach()
    pg_loss = -weight * advantages * logp
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((weight != ratio).float(), mask),
            "approx_kl": masked_mean(0.5 * log_ratio.square(), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return pg_loss, stats


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """[B, T] per-token k3 estimator of KL(pi || pi_ref): exp(d) - d - 1, d = ref_logp - logp (>= 0)."""
    d = (ref_logp - logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    return torch.exp(d) - d - 1.0
