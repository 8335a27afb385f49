"""Reward shaping: (rewards [P, G], lengths [P, G]) -> shaped rewards [P, G].

Shaping changes what the advantage sees; accuracy metrics keep the raw rewards.
"""

from __future__ import annotations

import attrs
import torch

from algorithms.registry import FieldError, Registry, ge, integer

SHAPERS = Registry("shaping", "rewards [P, G], lengths [P, G] -> rewards [P, G]")


@SHAPERS.register("none")
def no_shaping(rewards: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Rewards unchanged."""
    return rewards


@attrs.frozen
class OverlongParams:
    max_length: int = attrs.field(default=20480, validator=integer(1))
    """L_max: the generation budget in tokens (DAPO: 20480)."""
    buffer: int = attrs.field(default=4096, validator=integer(1))
    """L_buffer: the soft zone before L_max where the penalty ramps up (DAPO: 4096)."""
    penalty: float = attrs.field(default=1.0, validator=ge(0.0))
    """Penalty at L >= L_max (DAPO: 1)."""

    def __attrs_post_init__(self):
        if self.buffer > self.max_length:
            raise FieldError("buffer", f"must be <= max_length ({self.max_length}), got {self.buffer}")


@SHAPERS.register("overlong", OverlongParams)
def overlong_shaping(rewards: torch.Tensor, lengths: torch.Tensor, *, max_length: int, buffer: int, penalty: float) -> torch.Tensor:
    """DAPO soft overlong punishment: r + min(0, -(L - (L_max - L_buffer)) / L_buffer * penalty).

    Zero up to L_max - L_buffer, a linear ramp to -penalty at L_max, -penalty beyond.
    A no-op for responses of length 1 (the tabular policy) whenever L_max - L_buffer >= 1.
    """
    excess = (lengths.to(rewards.dtype) - (max_length - buffer)) / buffer
    return rewards - penalty * excess.clamp(0.0, 1.0)
