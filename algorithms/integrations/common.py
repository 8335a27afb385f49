"""What the TRL and verl integrations share: one of our reweighters for a framework's run.

``FrameworkReweighter`` binds a reweighter from a plain mapping (``{"name": "hadw",
"lambda_scale": 1.5}``), applies it once per generation batch to the framework's advantages
[P, G] with the batch's rewards [P, G], and saves / restores its state (HA-DW's belief) as one
file in the framework's checkpoint folder, together with the complete config it was built
from, so that a checkpoint is never resumed under a different reweighter.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import attrs
import torch

from algorithms import REWEIGHTERS, ConfigError

STATE_FILE = "rlvr_reweighter.pt"
"""The reweighter's state in a checkpoint folder (TRL's ``checkpoint-N``, verl's ``global_step_N``)."""

STATE_FORMAT = 1


def reweight_config(cfg: Mapping[str, Any] | str | None, where: str = "reweight") -> dict[str, Any]:
    """The complete config of a reweighter: ``{"name": ..., every hyperparameter with its value}``.

    ``cfg`` is a mapping with ``name`` and any hyperparameters, or just a name. Unknown names
    and bad values raise ``ConfigError`` naming ``where.field``.
    """
    if cfg is None:
        raise ConfigError(f"{where}.name: missing; valid: {', '.join(REWEIGHTERS.names())}")
    if isinstance(cfg, str):
        cfg = {"name": cfg}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}: must be a mapping with 'name' (or a name), got {type(cfg).__name__}")
    entry, params = REWEIGHTERS.make_params(dict(cfg), where)
    return {"name": entry.name, **attrs.asdict(params, recurse=False)}


def scalar_stats(stats: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The reweighter's 0-dim stats as floats (a host sync: call at logging time only)."""
    return {name: float(value) for name, value in stats.items()}


class FrameworkReweighter:
    """One of our reweighters inside another framework's trainer (one per training run).

    Call it once per generation batch with the batch's advantages and rewards, both [P, G]
    (P groups of G responses to the same prompt, every process's groups): it returns the
    reweighted advantages [P, G] and the stats (``hadw/belief``, ``phi/correct``, ...).
    ``update=False`` (evaluation) applies the current weights without moving the state.
    """

    def __init__(self, cfg: Mapping[str, Any] | str | None, where: str = "reweight"):
        self.where = where
        self.config = reweight_config(cfg, where)
        self.reweighter = REWEIGHTERS.build(self.config, where)
        self.batches = 0
        """Generation batches seen (state updates), saved with the state."""

    def __call__(self, advantages: torch.Tensor, rewards: torch.Tensor, *, update: bool = True
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(advantages [P, G], rewards [P, G]) -> (reweighted advantages [P, G], stats)."""
        if advantages.shape != rewards.shape or advantages.dim() != 2:
            raise ValueError(f"{self.where}: advantages {tuple(advantages.shape)} and rewards {tuple(rewards.shape)} "
                             "must both be [P, G]")
        reweighter = self.reweighter if update else copy.deepcopy(self.reweighter)
        weighted, stats = reweighter(advantages, rewards)
        if update:
            self.batches += 1
        return weighted.to(advantages.dtype), stats

    def state_dict(self) -> dict[str, Any]:
        """Config, reweighter state and batch count (tensors, numbers and strings only)."""
        return {"format": STATE_FORMAT, "config": dict(self.config), "batches": self.batches,
                "reweighter": self.reweighter.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any], source: str = "checkpoint") -> None:
        """Continue from ``state_dict()``'s output; refuses a state saved under another config."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{source}: reweighter state format {state.get('format')!r}, expected {STATE_FORMAT}")
        if dict(state["config"]) != self.config:
            raise ValueError(f"{source}: the reweighter state was saved with {state['config']}, this run is "
                             f"configured with {self.config}; resume with the same {self.where} config")
        self.reweighter.load_state_dict(state["reweighter"])
        self.batches = int(state["batches"])


def save_states(states: Mapping[str, Mapping[str, Any]], folder: str | os.PathLike) -> str:
    """Write ``{key: state_dict}`` to ``folder/rlvr_reweighter.pt`` (atomically); returns the path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, STATE_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save({key: dict(value) for key, value in states.items()}, tmp)
    os.replace(tmp, path)
    return path


def load_states(folder: str | os.PathLike) -> dict[str, dict[str, Any]] | None:
    """``{key: state_dict}`` from ``folder/rlvr_reweighter.pt``, or None where the file is absent."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
