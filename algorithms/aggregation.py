"""Loss aggregation: per-token loss [B, T] and mask [B, T] -> scalar.

This is where GRPO, DAPO and Dr.GRPO really differ: how long sequences are weighted.
"""

from __future__ import annotations

import attrs
import torch

from algorithms.registry import Registry, integer

AGGREGATIONS = Registry("aggregation", "per_token [B, T], mask [B, T] -> scalar")


@AGGREGATIONS.register("token_mean")
def token_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DAPO: every token of the batch weighs the same; sum over tokens / number of tokens."""
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GRPO: mean over each sequence's tokens, then mean over sequences."""
    mask = mask.to(per_token.dtype)
    per_seq = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)  # (B,)
    return per_seq.mean()


@AGGREGATIONS.register("seq_mean_token_sum")
def seq_mean_token_sum(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over each sequence's tokens, then mean over sequences (long answers weigh more)."""
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum(dim=1).mean()


@attrs.frozen
class SumNormParams:
    max_length: int | None = attrs.field(default=None, validator=attrs.validators.optional(integer(1)))
    """Constant divisor L_max (the generation budget); None: the padded width T of the batch."""


@AGGREGATIONS.register("seq_mean_token_sum_norm", SumNormParams)
def seq_mean_token_sum_norm(per_token: torch.Tensor, mask: torch.Tensor, *, max_length: int | None) -> torch.Tensor:
    """Dr.GRPO (Liu et al. 2025): token sums divided by a constant L_max, mean over sequences.

    A constant divisor removes GRPO's per-sequence 1/|o_i|, the source of its length bias.
    """
    mask = mask.to(per_token.dtype)
    divisor = float(max_length if max_length is not None else mask.shape[1])
    return (per_token * mask).sum(dim=1).mean() / divisor
