"""Group-relative RLVR algorithms as composable stages.

Public API:
    build_algorithm(algo_cfg, reweight_cfg) -> Algorithm
    registries() -> {"advantage", "reweight", "loss", "aggregation", "filter", "shaping"}
    ADVANTAGES, REWEIGHTERS, LOSSES, AGGREGATIONS, FILTERS, SHAPERS (each with .names())
    ConfigError
"""

from algorithms.advantages import ADVANTAGES
from algorithms.aggregation import AGGREGATIONS
from algorithms.algorithm import Algorithm, build_algorithm, registries
from algorithms.filters import FILTERS
from algorithms.losses import LOSSES
from algorithms.registry import ConfigError
from algorithms.reweighters import REWEIGHTERS
from algorithms.shaping import SHAPERS

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "FILTERS",
    "LOSSES",
    "REWEIGHTERS",
    "SHAPERS",
    "Algorithm",
    "ConfigError",
    "build_algorithm",
    "registries",
]
