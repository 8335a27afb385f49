"""Loss aggregation: per-token loss [B, T] and mask [B, T] -> scalar.

This is where GRPO, DAPO and Dr.GRPO really differ: how long sequences are weighted.
"""

from __future__ import annotations

import torch

from algorithms.registry import Registry

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
