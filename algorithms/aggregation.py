"""Loss aggregation: per-token loss [b, T], mask [b, T], totals -> scalar.

This is where GRPO, DAPO and Dr.GRPO really differ: how long sequences are weighted.

Every mode is a masked sum divided by counts of the *whole minibatch* (``Totals``: its
token and response counts, summed over every process). A micro-batch's scalar is then its
share of the minibatch loss, so gradient accumulation over micro-batches and over
processes gives exactly the gradient of the whole minibatch. Padded positions are
selected away with ``torch.where`` (not multiplied by the mask), so a -inf or NaN there
leaves the loss and its gradient finite.
"""

from __future__ import annotations

import attrs
import torch

from algorithms.registry import Registry, integer

AGGREGATIONS = Registry("aggregation", "per_token [b, T], mask [b, T], totals -> scalar")


@attrs.frozen
class Totals:
    """Counts over the whole minibatch (all micro-batches, all processes)."""

    tokens: torch.Tensor
    """0-dim float: response tokens (sum of the mask)."""
    sequences: torch.Tensor
    """0-dim float: responses."""

    @staticmethod
    def of(mask: torch.Tensor) -> "Totals":
        """The totals of one local minibatch ``mask`` [B, T]."""
        m = mask.to(torch.float32)
        return Totals(tokens=m.sum(), sequences=torch.tensor(float(mask.shape[0]), device=mask.device))


def masked_tokens(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[b, T] ``per_token`` where ``mask``, exactly 0 elsewhere (no NaN from padding)."""
    return torch.where(mask.bool(), per_token, torch.zeros((), dtype=per_token.dtype, device=per_token.device))


def _totals(mask: torch.Tensor, totals: Totals | None) -> Totals:
    return Totals.of(mask) if totals is None else totals


@AGGREGATIONS.register("token_mean")
def token_mean(per_token: torch.Tensor, mask: torch.Tensor, totals: Totals | None = None) -> torch.Tensor:
    """DAPO: every token of the minibatch weighs the same; token sum / token count."""
    return masked_tokens(per_token, mask).sum() / _totals(mask, totals).tokens.clamp_min(1.0)


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(per_token: torch.Tensor, mask: torch.Tensor, totals: Totals | None = None) -> torch.Tensor:
    """GRPO: mean over each sequence's tokens, then mean over the minibatch's sequences."""
    per_seq = masked_tokens(per_token, mask).sum(dim=1) / mask.to(per_token.dtype).sum(dim=1).clamp_min(1.0)  # (b,)
    return per_seq.sum() / _totals(mask, totals).sequences.clamp_min(1.0)


@AGGREGATIONS.register("seq_mean_token_sum")
def seq_mean_token_sum(per_token: torch.Tensor, mask: torch.Tensor, totals: Totals | None = None) -> torch.Tensor:
    """Sum over each sequence's tokens, then mean over sequences (long answers weigh more)."""
    return masked_tokens(per_token, mask).sum() / _totals(mask, totals).sequences.clamp_min(1.0)


@attrs.frozen
class SumNormParams:
    max_length: int = attrs.field(validator=integer(1))
    """Constant divisor L_max: the generation budget (presets interpolate ``policy.max_new_tokens``)."""


@AGGREGATIONS.register("seq_mean_token_sum_norm", SumNormParams)
def seq_mean_token_sum_norm(per_token: torch.Tensor, mask: torch.Tensor, totals: Totals | None = None, *,
                            max_length: int) -> torch.Tensor:
    """Dr.GRPO (Liu et al. 2025): token sums divided by a constant L_max, mean over sequences.

    A constant divisor removes GRPO's per-sequence 1/|o_i|, the source of its length bias.
    """
    return masked_tokens(per_token, mask).sum() / (_totals(mask, totals).sequences.clamp_min(1.0) * max_length)
