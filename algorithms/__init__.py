"""Group-relative RLVR algorithms as composable stages.

Public API:
    build_algorithm(algo_cfg, reweight_cfg) -> Algorithm
    registries() -> {"advantage": ..., "reweight": ..., "loss": ..., "aggregation": ...}
    ADVANTAGES, REWEIGHTERS, LOSSES, AGGREGATIONS (each with .names())
    ConfigError
"""

from algorithms.advantages import ADVANTAGES
from algorithms.aggregation import AGGREGATIONS
from algorithms.algorithm import Algorithm, build_algorithm, registries
from algorithms.losses import LOSSES
from algorithms.registry import ConfigError
from algorithms.reweighters import REWEIGHTERS

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "LOSSES",
    "REWEIGHTERS",
    "Algorithm",
    "ConfigError",
    "build_algorithm",
    "registries",
]
