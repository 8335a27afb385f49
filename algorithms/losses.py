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


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


@attrs.frozen
class PPOClipParams:
    eps_low: float = attrs.field(default=0.2, validator=ge(0.0))
    """Lower clip: the ratio is kept above 1 - eps_low (PPO, Schulman et al. 2017)."""
    eps_high: float = attrs.field(default=0.2, validator=ge(0.0))
    """Upper clip: the ratio is kept below 1 + eps_high (DAPO clip-higher uses 0.28)."""
    dual_clip: float | None = attrs.field(default=None, validator=gt(1.0))
    """Dual-clip constant c > 1 bounding the loss for A < 0 (Ye et al. 2020); None = off."""


@LOSSES.register("ppo_clip", PPOClipParams)
def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    dual_clip: float | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate, per token: max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))."""
    log_ratio = (logp - old_logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)  # (B, T)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    pg_loss = torch.maximum(pg_loss1, pg_loss2)
    if dual_clip is not None:
        pg_loss3 = -advantages * dual_clip
        pg_loss = torch.where(advantages < 0, torch.minimum(pg_loss, pg_loss3), pg_loss)
    with torch.no_grad():
        stats = {
            "clip_frac": _masked_mean((pg_loss2 > pg_loss1).float(), mask),
            "approx_kl": _masked_mean(0.5 * log_ratio.square(), mask),
            "ratio_mean": _masked_mean(ratio, mask),
        }
    return pg_loss, stats
