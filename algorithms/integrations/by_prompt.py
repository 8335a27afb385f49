"""Outcome advantages for trainers that hand over flat batches with a prompt id per row (verl's ``uid``).

A batch is B rows, each one response with its outcome reward and the id of its prompt. Rows
are grouped by id, not by position (a trainer may reorder rows: verl balances the batch across
data-parallel ranks before computing advantages), into rewards [P, G]; our advantage stage and
reweighter run on those, and the results go back to the rows they came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import torch

from algorithms import ADVANTAGES
from algorithms.integrations.common import FrameworkReweighter


@attrs.frozen
class Groups:
    """Rows grouped by prompt id: ``rows[order].view(num_groups, group_size)`` is [P, G]."""

    order: torch.Tensor
    """[B] long: the row indices group by group (groups in order of first appearance, rows in batch order)."""
    num_groups: int
    """P: distinct prompt ids."""
    group_size: int
    """G: responses per prompt id (the same for every id)."""


def group_rows(index: Sequence[Any] | np.ndarray, where: str = "index") -> Groups:
    """Group B rows by their prompt id ``index`` [B] (strings or numbers; verl: ``uid``).

    Refuses groups of unequal size (our reweighters read a batch as [P, G]) and groups of one
    response (no group baseline), naming the sizes.
    """
    if index is None:
        raise ValueError(f"{where}: no prompt ids: group-relative advantages need the id of each row's prompt")
    ids = np.asarray(index).astype(str)  # (B,) object / number ids compared as text
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"{where}: prompt ids must be a non-empty sequence [B], got shape {ids.shape}")
    _, first, inverse, counts = np.unique(ids, return_index=True, return_inverse=True, return_counts=True)
    if counts.min() != counts.max():
        raise ValueError(f"{where}: groups of unequal size ({counts.min()} to {counts.max()} responses per prompt id); "
                         "the reweighters need every prompt's group complete and of one size G")
    if counts[0] < 2:
        raise ValueError(f"{where}: one response per prompt id: group-relative advantages need G >= 2 per prompt")
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))  # group number by first appearance
    order = np.argsort(rank[inverse.reshape(-1)], kind="stable")  # (B,)
    return Groups(torch.from_numpy(order), len(first), int(counts[0]))


def advantage_config(cfg: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The complete config of an advantage stage: ``{"name": ..., every hyperparameter with its value}``."""
    entry, params = ADVANTAGES.make_params(dict(cfg), where)
    return {"name": entry.name, **attrs.asdict(params, recurse=False)}


class OutcomeReweighting:
    """Our advantage stage + reweighter on B outcome rewards grouped by prompt id.

    Call with scores [B] and prompt ids [B]: returns the reweighted advantages [B] (one per
    row, in the rows' order) and the reweighter's stats. The reweighter's state moves once per call.
    """

    def __init__(self, advantage: Mapping[str, Any], reweight: Mapping[str, Any] | str, where: str):
        self.where = where
        self.advantage_config = advantage_config(advantage, f"{where}.advantage")
        self.advantage = ADVANTAGES.build(self.advantage_config, f"{where}.advantage")
        self.reweight = FrameworkReweighter(reweight, f"{where}.reweight")

    @property
    def config(self) -> dict[str, Any]:
        """The complete configs of both stages."""
        return {"advantage": dict(self.advantage_config), "reweight": dict(self.reweight.config)}

    def __call__(self, scores: torch.Tensor, index: Sequence[Any] | np.ndarray
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(scores [B], prompt ids [B]) -> (advantages [B], stats)."""
        if scores.dim() != 1 or len(scores) != len(index):
            raise ValueError(f"{self.where}: scores {tuple(scores.shape)} and {len(index)} prompt ids must both be [B]")
        groups = group_rows(index, f"{self.where}: prompt ids")
        order = groups.order.to(scores.device)
        rewards = scores[order].view(groups.num_groups, groups.group_size)  # (P, G)
        weighted, stats = self.reweight(self.advantage(rewards), rewards)  # (P, G)
        out = torch.empty_like(scores)
        out[order] = weighted.reshape(-1).to(scores.dtype)  # (B,) back in the rows' order
        return out, stats
