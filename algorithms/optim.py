"""Optimizer and learning-rate schedule config (one attrs class) and their builders."""

from __future__ import annotations

import math

import attrs
import torch

from algorithms.registry import ConfigError, between, ge, gt, integer, one_of


@attrs.frozen
class OptimParams:
    name: str = attrs.field(default="adam", validator=one_of("adam", "adamw", "sgd"))
    """Optimizer: adam, adamw or sgd."""
    lr: float = attrs.field(default=1e-6, validator=gt(0.0))
    """Peak learning rate (each policy preset sets its own)."""
    weight_decay: float = attrs.field(default=0.0, validator=ge(0.0))
    """Weight decay (decoupled for adamw)."""
    max_grad_norm: float | None = attrs.field(default=1.0, validator=gt(0.0))
    """Clip the global gradient norm to this value (None: no clipping, norm still logged)."""
    warmup_steps: int = attrs.field(default=0, validator=integer(0))
    """Optimizer steps of linear warm-up: step k (from 0) uses lr * (k + 1) / warmup_steps."""
    schedule: str = attrs.field(default="constant", validator=one_of("constant", "linear", "cosine"))
    """After warm-up: constant, or a linear / cosine decay to lr * min_lr_ratio at the last optimizer step."""
    min_lr_ratio: float = attrs.field(default=0.0, validator=between(0.0, 1.0))
    """Final learning rate of a decaying schedule, as a fraction of lr."""


def build_optimizer(params: OptimParams, parameters) -> torch.optim.Optimizer:
    """The optimizer over the trainable ``parameters``; a ConfigError where ``lr`` or
    ``weight_decay`` does not fit the weights' precision (1e300 overflows float32 inside the
    update, which would stop the run with a traceback from within the optimizer)."""
    parameters = [p for p in parameters if p.requires_grad]
    # Adam's first step scales lr by 1 / (1 - beta1) = 10 (its bias correction)
    scale = {"lr": 1.0 if params.name == "sgd" else 10.0, "weight_decay": 1.0}
    for field in ("lr", "weight_decay"):
        value = abs(getattr(params, field)) * scale[field]
        for dtype in {p.dtype for p in parameters if p.is_floating_point()}:
            if value > torch.finfo(dtype).max:
                raise ConfigError(f"optim.{field}: {getattr(params, field)} overflows the weights' "
                                  f"{str(dtype).removeprefix('torch.')} inside the {params.name} update "
                                  f"({value:.3g} > {torch.finfo(dtype).max:.3g})")
    if params.name == "sgd":
        return torch.optim.SGD(parameters, lr=params.lr, weight_decay=params.weight_decay)
    cls = torch.optim.AdamW if params.name == "adamw" else torch.optim.Adam
    return cls(parameters, lr=params.lr, weight_decay=params.weight_decay)


def lr_factor(step: int, params: OptimParams, total_steps: int) -> float:
    """Multiplier of ``params.lr`` at optimizer step ``step`` (0-based) of ``total_steps``."""
    if step < params.warmup_steps:
        return (step + 1) / params.warmup_steps
    if params.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - params.warmup_steps) / max(1, total_steps - 1 - params.warmup_steps))
    shape = 1.0 - progress if params.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return params.min_lr_ratio + (1.0 - params.min_lr_ratio) * shape


def build_scheduler(params: OptimParams, optimizer: torch.optim.Optimizer, total_steps: int):
    """A ``LambdaLR`` stepped once per optimizer step, or None for a constant rate without
    warm-up (then nothing touches the learning rate at all)."""
    if params.schedule == "constant" and params.warmup_steps == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, params, total_steps))
