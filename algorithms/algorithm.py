"""An algorithm is a preset that names one item per stage; this module binds them.

    grpo      = group_norm + ppo_clip(0.2, 0.2) + seq_mean_token_mean
    grpo_hadw = grpo + reweight: hadw

``build_algorithm(algo_cfg, reweight_cfg)`` validates every stage's config once and
returns an ``Algorithm`` whose fields are plain callables with fixed signatures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from algorithms.advantages import ADVANTAGES
from algorithms.aggregation import AGGREGATIONS
from algorithms.losses import LOSSES
from algorithms.registry import ConfigError
from algorithms.reweighters import REWEIGHTERS, Reweighter

# Keys of an algo preset besides its stages.
STAGE_KEYS = ("advantage", "loss", "aggregation")
META_KEYS = ("name", "paper")


@attrs.define
class Algorithm:
    """The bound stages of one algorithm (see DESIGN.md, "The pipeline")."""

    name: str
    """Label: the preset's base name, plus ``_<reweighter>`` when one is on."""
    advantage: Callable
    """rewards [P, G] -> advantages [P, G]."""
    reweighter: Reweighter
    """(advantages [P, G], rewards [P, G]) -> (advantages [P, G], stats); may hold state."""
    loss: Callable
    """(logp, old_logp, advantages, mask) -> (per_token [B, T], stats)."""
    aggregate: Callable
    """(per_token [B, T], mask [B, T]) -> scalar."""


def build_algorithm(algo_cfg: Mapping[str, Any], reweight_cfg: Mapping[str, Any] | None = None) -> Algorithm:
    """Build an ``Algorithm`` from plain mappings (e.g. Hydra's ``cfg.algo`` and ``cfg.reweight``).

    ``algo_cfg`` has ``name`` and one sub-mapping per stage (``advantage``, ``loss``,
    ``aggregation``), each with its own ``name`` and hyperparameters.
    """
    algo_cfg = dict(algo_cfg)
    unknown = sorted(set(algo_cfg) - set(STAGE_KEYS) - set(META_KEYS))
    if unknown:
        raise ConfigError(f"algo.{unknown[0]}: unknown key; valid: {', '.join(STAGE_KEYS + META_KEYS)}")
    for key in ("name",) + STAGE_KEYS:
        if key not in algo_cfg:
            raise ConfigError(f"algo.{key}: missing")
    reweight_cfg = dict(reweight_cfg or {"name": "none"})
    reweighter = REWEIGHTERS.build(reweight_cfg, "reweight")
    label = algo_cfg["name"] if reweight_cfg["name"] == "none" else f"{algo_cfg['name']}_{reweight_cfg['name']}"
    return Algorithm(
        name=label,
        advantage=ADVANTAGES.build(algo_cfg["advantage"], "algo.advantage"),
        reweighter=reweighter,
        loss=LOSSES.build(algo_cfg["loss"], "algo.loss"),
        aggregate=AGGREGATIONS.build(algo_cfg["aggregation"], "algo.aggregation"),
    )


def registries() -> dict[str, Any]:
    """All stage registries by stage name (for listing and ``--help``)."""
    return {
        "advantage": ADVANTAGES,
        "reweight": REWEIGHTERS,
        "loss": LOSSES,
        "aggregation": AGGREGATIONS,
    }
