"""Optimizers for a parameter with a leading run dimension: R independent runs, one tensor.

Adam on a [R, N, K] table is elementwise, so one Adam over the table is R separate Adams,
except that each run may have its own learning rate and weight decay. ``RunOptimizer``
takes them as [R] tensors and repeats torch's single-tensor update (``torch.optim.Adam``,
``AdamW``, ``SGD`` without momentum) op for op, so each run's table moves exactly as under
its own torch optimizer (tests/test_sim_optim.py). ``clip_per_run`` is
``torch.nn.utils.clip_grad_norm_`` applied to each run's gradient separately.
"""

from __future__ import annotations

import math

import torch

from algorithms.optim import OptimParams

# torch.optim.Adam / AdamW defaults (build_optimizer does not change them).
BETAS = (0.9, 0.999)
EPS = 1e-8


def per_run(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """[R] floats as a float64 tensor shaped [R, 1, ..., 1] to broadcast against ``like`` [R, ...]."""
    return torch.tensor(values, dtype=torch.float64).view(-1, *([1] * (like.dim() - 1)))


class RunOptimizer:
    """Adam, AdamW or SGD over ``param`` [R, ...] with per-run ``lr`` and ``weight_decay`` [R]."""

    def __init__(self, param: torch.Tensor, params: list[OptimParams]):
        names = {p.name for p in params}
        if len(names) != 1:
            raise ValueError(f"optim.name: one optimizer per batch, got {sorted(names)}")
        if len(params) != param.shape[0]:
            raise ValueError(f"{len(params)} optimizer configs for {param.shape[0]} runs")
        self.name = names.pop()
        self.param = param
        self.lr = per_run([p.lr for p in params], param)
        self.weight_decay = per_run([p.weight_decay for p in params], param)
        self.decay = any(p.weight_decay != 0 for p in params)
        self.steps = 0
        if self.name != "sgd":
            self.exp_avg = torch.zeros_like(param)
            self.exp_avg_sq = torch.zeros_like(param)

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        """One update of every run from ``grad`` [R, ...] (torch's op order, per-run scalars)."""
        param, lr, wd = self.param, self.lr, self.weight_decay
        self.steps += 1
        if self.decay and self.name == "adamw":
            param.mul_((1 - lr * wd).to(param.dtype))
        elif self.decay:
            grad = grad + (wd.to(param.dtype) * param)  # torch: grad.add(param, alpha=weight_decay)
        if self.name == "sgd":
            param.add_((-lr).to(param.dtype) * grad)
            return
        beta1, beta2 = BETAS
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / (1 - beta1**self.steps)  # (R, 1, 1) float64, as torch's Python float
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(EPS)
        param.add_((-step_size).to(param.dtype) * self.exp_avg / denom)  # torch: addcdiv_(exp_avg, denom, value=-step_size)

    def state_dict(self) -> dict:
        state = {"steps": self.steps}
        if self.name != "sgd":
            state.update(exp_avg=self.exp_avg.clone(), exp_avg_sq=self.exp_avg_sq.clone())
        return state


def clip_per_run(grads: torch.Tensor | list[torch.Tensor], max_norm: torch.Tensor | None) -> torch.Tensor:
    """Clip each run's gradient, ``grads`` [R, ...] (or several such tensors together), in place to its
    ``max_norm`` [R] (inf: no clipping; None: no run clips); returns the norms before clipping
    [R]. Several tensors: the norm of their norms, as ``clip_grad_norm_`` over several parameters."""
    grads = [grads] if torch.is_tensor(grads) else grads
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1) for g in grads])  # (n, R)
    norms = norms[0] if len(grads) == 1 else torch.linalg.vector_norm(norms, dim=0)  # (R,)
    if max_norm is not None:
        coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)  # torch's clip_grad_norm_ formula
        for grad in grads:
            grad.mul_(coef.view(-1, *([1] * (grad.dim() - 1))))
    return norms
