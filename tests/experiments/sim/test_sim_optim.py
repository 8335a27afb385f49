"""Per-run optimizers and clipping of the batched simulator against torch's, run by run."""

import pytest
import torch

from algorithms.optim import OptimParams, build_optimizer
from experiments.sim.per_run_optim import RunOptimizer, clip_per_run

LRS = [0.01, 0.3, 1e-3]
MAX_NORMS = [0.5, float("inf"), 2.0]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_run_optimizer_is_one_torch_optimizer_per_run(name, weight_decay):
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(3, 5, 4, generator=gen)
    table = init.clone()
    opt = RunOptimizer(table, [OptimParams(name=name, lr=lr, weight_decay=weight_decay) for lr in LRS])
    params = [torch.nn.Parameter(init[r].clone()) for r in range(3)]
    torch_opts = [build_optimizer(OptimParams(name=name, lr=lr, weight_decay=weight_decay), [p]) for p, lr in zip(params, LRS)]
    for step in range(100):
        grad = torch.randn(3, 5, 4, generator=gen) * (step % 5)  # includes all-zero gradients
        norms = clip_per_run(grad_mine := grad.clone(), torch.tensor(MAX_NORMS))
        opt.step(grad_mine)
        for r, (p, o) in enumerate(zip(params, torch_opts)):
            p.grad = grad[r].clone()
            norm = torch.nn.utils.clip_grad_norm_([p], MAX_NORMS[r])
            torch.testing.assert_close(norms[r], norm, rtol=1e-6, atol=0)
            o.step()
    for r, p in enumerate(params):
        torch.testing.assert_close(table[r], p.detach(), rtol=1e-6, atol=1e-6)
    if name == "adam" and weight_decay == 0.0:  # the same ops in the same order: bitwise
        assert all(torch.equal(table[r], p.detach()) for r, p in enumerate(params))


def test_clip_per_run_scales_each_run_to_its_norm():
    grad = torch.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]])  # norms 5, 0.5, 10
    norms = clip_per_run(grad, torch.tensor([1.0, 1.0, float("inf")]))
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5, 10.0]))
    torch.testing.assert_close(grad.norm(dim=1), torch.tensor([1.0, 0.5, 10.0]), rtol=1e-5, atol=0)


def test_one_optimizer_kind_per_batch():
    with pytest.raises(ValueError, match="one optimizer per batch"):
        RunOptimizer(torch.zeros(2, 3), [OptimParams(name="adam"), OptimParams(name="sgd")])
