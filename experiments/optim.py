"""Optimizer config (one attrs class) and its builder."""

from __future__ import annotations

import attrs
import torch

from algorithms.registry import ge, gt, one_of


@attrs.frozen
class OptimParams:
    name: str = attrs.field(default="adam", validator=one_of("adam", "adamw", "sgd"))
    """Optimizer: adam, adamw or sgd."""
    lr: float = attrs.field(default=1e-6, validator=gt(0.0))
    """Learning rate (each policy preset sets its own)."""
    weight_decay: float = attrs.field(default=0.0, validator=ge(0.0))
    """Weight decay (decoupled for adamw)."""
    max_grad_norm: float | None = attrs.field(default=1.0, validator=gt(0.0))
    """Clip the global gradient norm to this value (None: no clipping, norm still logged)."""


def build_optimizer(params: OptimParams, parameters) -> torch.optim.Optimizer:
    parameters = [p for p in parameters if p.requires_grad]
    if params.name == "sgd":
        return torch.optim.SGD(parameters, lr=params.lr, weight_decay=params.weight_decay)
    cls = torch.optim.AdamW if params.name == "adamw" else torch.optim.Adam
    return cls(parameters, lr=params.lr, weight_decay=params.weight_decay)
