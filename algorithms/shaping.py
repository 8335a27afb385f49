"""Reward shaping: (rewards [P, G], lengths [P, G]) -> shaped rewards [P, G].

Shaping changes what the advantage sees; accuracy metrics keep the raw rewards.
"""

from __future__ import annotations

import attrs
import torch

from algorithms.registry import Registry, between, ge, integer

SHAPERS = Registry("shaping", "rewards [P, G], lengths [P, G] -> rewards [P, G]")


@SHAPERS.register("none")
def no_shaping(rewards: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Rewards unchanged."""
    return rewards


@attrs.frozen
class OverlongParams:
    max_length: int = attrs.field(validator=integer(1))
    """L_max: the generation budget in tokens (presets interpolate ``policy.max_new_tokens``; DAPO: 20480)."""
    buffer_fraction: float = attrs.field(default=0.2, validator=between(0.0, 1.0))
    """L_buffer / L_max: the soft zone before L_max where the penalty ramps up (DAPO: 4096 / 20480 = 0.2)."""
    penalty: float = attrs.field(default=1.0, validator=ge(0.0))
    """Penalty at L >= L_max (DAPO: 1)."""


def overlong_buffer(max_length: int, buffer_fraction: float) -> int:
    """L_buffer in whole tokens: floor(fraction * L_max) (DAPO: 0.2 * 20480 = 4096)."""
    return int(buffer_fraction * max_length)


@SHAPERS.register("overlong", OverlongParams)
def overlong_shaping(rewards: torch.Tensor, lengths: torch.Tensor, *, max_length: int, buffer_fraction: float,
                     penalty: float) -> torch.Tensor:
    """DAPO soft overlong punishment: r + min(0, -(L - (L_max - L_buffer)) / L_buffer * penalty).

    Zero up to L_max - L_buffer, a linear ramp to -penalty at L_max, -penalty beyond. With
    L_buffer = 0 (a budget too small for a soft zone, e.g. the tabular policy's L_max = 1)
    only responses longer than L_max are punished, which never happens: a no-op.
    """
    buffer = overlong_buffer(max_length, buffer_fraction)
    excess = (lengths.to(rewards.dtype) - (max_length - buffer)) / max(buffer, 1)
    return rewards - penalty * excess.clamp(0.0, 1.0)
