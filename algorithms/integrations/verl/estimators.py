"""The verl advantage estimators and the reweighter state they keep in verl's driver process.

verl calls a registered estimator as ``fn(token_level_rewards=[B, T], response_mask=[B, T],
index=uid [B], config=algorithm config)`` once per training batch, in the driver (the process
that runs the trainer's ``fit``), and expects ``(advantages, returns)``, both [B, T]. It passes
no step counter and saves nothing of ours, so the state (HA-DW's belief) lives here, one per
estimator name, and ``ReweighterCheckpoint`` saves / restores it with verl's checkpoints.

Configuration, all under ``algorithm.rlvr`` (add with ``+algorithm.rlvr.reweight.lambda_scale=1.3``):

    reweight:   our reweighter, ``{name, hyperparameters}``; for ``grpo_hadw`` / ``grpo_focal`` /
                ``grpo_agrae`` the name is implied, for ``rlvr_reweighted`` it is required
    advantage:  our advantage stage; default ``group_norm`` with eps 1e-6 (verl's GRPO), or
                ``group_mean`` (Dr.GRPO) where ``algorithm.norm_adv_by_std_in_grpo=false``
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from algorithms import ConfigError
from algorithms.integrations.by_prompt import OutcomeReweighting, advantage_config
from algorithms.integrations.common import reweight_config, scalar_stats

logger = logging.getLogger(__name__)

ESTIMATORS: dict[str, str | None] = {"grpo_hadw": "hadw", "grpo_focal": "focal", "grpo_agrae": "agrae",
                                     "rlvr_reweighted": None}
"""verl estimator name -> our reweighter (None: named by ``algorithm.rlvr.reweight.name``)."""

RLVR_KEYS = ("advantage", "reweight")
CALLBACK = "algorithms.integrations.verl.checkpoint.ReweighterCheckpoint"


def plain(value: Any) -> Any:
    """An OmegaConf / verl config node as plain dicts and lists (anything else unchanged)."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with hydra-core, a core dependency
        pass
    return dict(value) if isinstance(value, Mapping) else value


def config_value(config: Any, key: str, default: Any = None) -> Any:
    """``config[key]`` of a DictConfig, a dict or verl's ``AlgoConfig`` dataclass (``default`` where absent)."""
    if config is None:
        return default
    if hasattr(config, "get"):
        return config.get(key, default)
    return getattr(config, key, default)


def stage_configs(name: str, config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(advantage config, reweight config) of estimator ``name`` from verl's ``algorithm`` config."""
    rlvr = plain(config_value(config, "rlvr")) or {}
    if not isinstance(rlvr, Mapping):
        raise ConfigError(f"algorithm.rlvr: must be a mapping with {' and/or '.join(RLVR_KEYS)}, got {rlvr!r}")
    unknown = sorted(set(rlvr) - set(RLVR_KEYS))
    if unknown:
        raise ConfigError(f"algorithm.rlvr.{unknown[0]}: unknown key; valid: {', '.join(RLVR_KEYS)}")
    reweight = dict(plain(rlvr.get("reweight")) or {})
    implied = ESTIMATORS[name]
    if implied is None and "name" not in reweight:
        raise ConfigError(f"algorithm.rlvr.reweight.name: missing; {name} applies the reweighter named there "
                          "(e.g. +algorithm.rlvr.reweight.name=hadw_window)")
    if implied is not None and reweight.setdefault("name", implied) != implied:
        raise ConfigError(f"algorithm.rlvr.reweight.name: estimator {name} applies {implied}, got "
                          f"{reweight['name']!r}; use algorithm.adv_estimator=rlvr_reweighted for another reweighter")
    advantage = plain(rlvr.get("advantage"))
    if advantage is None:
        by_std = config_value(config, "norm_adv_by_std_in_grpo", True)
        advantage = {"name": "group_norm", "eps": 1e-6} if by_std else {"name": "group_mean"}
    return dict(advantage), reweight


class DriverState:
    """The estimators' reweighting, one per estimator name, in the driver process."""

    def __init__(self):
        self.runs: dict[str, OutcomeReweighting] = {}
        self.pending: dict[str, dict[str, Any]] = {}
        """States restored from a checkpoint for estimators not called yet."""
        self.saving = False
        """True once a ``ReweighterCheckpoint`` exists in this process (verl saves our state)."""
        self.latest: dict[str, dict[str, float]] = {}
        """Each estimator's stats of its latest batch (``hadw/belief``, ``phi/correct``, ...)."""
        self._warned = False

    def run(self, name: str, config: Any) -> OutcomeReweighting:
        """The reweighting of estimator ``name``, built on its first call (and checked on the later ones)."""
        advantage, reweight = stage_configs(name, config)
        run = self.runs.get(name)
        if run is None:
            run = self.runs[name] = OutcomeReweighting(advantage, reweight, "algorithm.rlvr")
            if name in self.pending:
                run.reweight.load_state_dict(self.pending.pop(name), source=f"verl checkpoint ({name})")
            if not self.saving and not self._warned:
                self._warned = True
                warnings.warn(f"{name}: the reweighter's state is not saved with verl's checkpoints: set "
                              f"trainer.checkpoint_callback_class={CALLBACK} "
                              "(python -m algorithms.integrations.verl.main sets it)", stacklevel=3)
        elif {"advantage": advantage_config(advantage, "algorithm.rlvr.advantage"),
              "reweight": reweight_config(reweight, "algorithm.rlvr.reweight")} != run.config:
            raise ConfigError(f"algorithm.rlvr: {name} was built with {run.config}; the config changed between calls")
        return run

    def state_dicts(self) -> dict[str, dict[str, Any]]:
        """Every estimator's reweighter state (restored ones not called yet included)."""
        return {**self.pending, **{name: run.reweight.state_dict() for name, run in self.runs.items()}}

    def restore(self, states: Mapping[str, Mapping[str, Any]], source: str) -> None:
        """Continue from ``state_dicts()``'s output: now for estimators built, on first call for the others."""
        for name, state in states.items():
            if name in self.runs:
                self.runs[name].reweight.load_state_dict(state, source=source)
            else:
                self.pending[name] = dict(state)

    def reset(self) -> None:
        """Forget every state (a fresh driver)."""
        self.__init__()


DRIVER = DriverState()


def outcome_advantage(name: str, token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: Any,
                      config: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimator ``name``: advantages and returns [B, T], one reweighted value per response on its tokens.

    The outcome reward of a response is the sum of its token-level rewards (verl's GRPO); groups
    are the rows sharing a ``uid``; the state moves once per call (one training batch).
    """
    if token_level_rewards.dim() != 2 or token_level_rewards.shape != response_mask.shape:
        raise ValueError(f"{name}: token_level_rewards {tuple(token_level_rewards.shape)} and response_mask "
                         f"{tuple(response_mask.shape)} must both be [B, T]")
    run = DRIVER.run(name, config)
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)  # (B,)
        advantages, stats = run(scores, index)  # (B,)
        advantages = advantages[:, None] * response_mask  # (B, T)
    DRIVER.latest[name] = scalar_stats(stats)  # host sync once per batch; the driver's tensors are on the CPU
    logger.info("%s: %s", name, " ".join(f"{k}={v:.4f}" for k, v in DRIVER.latest[name].items()))
    return advantages, advantages
