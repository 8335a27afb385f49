"""The batched simulator runs the log-linear policy: R runs as tensors give the single runs'
numbers at every sharing, and at sharing 0 exactly the tabular batch's."""

import numpy as np
import pytest
import torch

from experiments.sim import BatchedSimulator, NotBatchable
from experiments.sim.batched import check_fixed_tensors
from experiments.sim.per_run_optim import clip_per_run
from policies import LogLinearPolicy, TabularParams
from policies.loglinear import skill_mixture
from tests.experiments.sim.test_batched import assert_same_as_single_runs, configs, one_thread  # noqa: F401

RUNS = [["algo=grpo_hadw"], ["algo=grpo", "optim.lr=0.05", "optim.max_grad_norm=0.5"]]


@pytest.mark.parametrize("sharing", ["0", "0.5", "1"])
def test_batched_loglinear_runs_equal_single_runs(make_cfg, sharing):
    runs = [[*r, "policy=loglinear", f"policy.sharing={sharing}"] for r in RUNS]
    assert_same_as_single_runs(configs(make_cfg, runs, steps=20))


def test_at_sharing_zero_the_batch_is_the_tabular_batch_bit_for_bit(make_cfg):
    tabular = BatchedSimulator(configs(make_cfg, [["policy=tabular", *r] for r in RUNS]))
    loglinear = BatchedSimulator(configs(make_cfg, [["policy=loglinear", "policy.sharing=0", *r] for r in RUNS]))
    assert list(loglinear.weights) == ["per_prompt"]
    for a, b in zip(tabular.run(), loglinear.run()):
        assert a.keys == b.keys and np.array_equal(a.values, b.values, equal_nan=True)
    assert torch.equal(tabular.logits, loglinear.logits)


def test_shared_weights_have_their_own_optimizer_and_joint_clipping(make_cfg):
    sim = BatchedSimulator(configs(make_cfg, [["policy=loglinear", "policy.sharing=0.5", *RUNS[1]]], steps=3))
    assert {name: tuple(w.shape) for name, w in sim.weights.items()} == {"per_prompt": (2, 64, 16), "theta": (2, 8, 16)}
    theta = sim.weights["theta"].detach().clone()
    sim.run()
    assert not torch.equal(sim.weights["theta"], theta)  # the shared part learns


def test_runs_with_different_skill_mixtures_are_refused(make_cfg):
    cfgs = configs(make_cfg, [["policy=loglinear"], ["policy=loglinear", "policy.seed=1"]], seeds=(0,), steps=2)
    with pytest.raises(NotBatchable, match="run 1 differs from run 0 in policy.seed"):
        BatchedSimulator(cfgs)
    table = TabularParams(num_prompts=4, num_answers=3)
    policies = [LogLinearPolicy(table, 0.5, skill_mixture(4, 2, 0.5, seed)) for seed in (0, 0, 1)]
    assert check_fixed_tensors(policies[:2]) is policies[0]
    with pytest.raises(NotBatchable, match="run 2: policy tensor 'mixing' differs"):
        check_fixed_tensors(policies)


def test_clipping_several_tensors_per_run_is_clip_grad_norm_over_the_runs_parameters():
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 5, 4, generator=gen), torch.randn(3, 2, 4, generator=gen)]  # two weights of 3 runs
    max_norm = torch.tensor([1.0, 0.5, float("inf")])
    mine = [g.clone() for g in grads]
    norms = clip_per_run(mine, max_norm)
    for r in range(3):
        params = [torch.nn.Parameter(torch.zeros_like(g[r])) for g in grads]
        for p, g in zip(params, grads):
            p.grad = g[r].clone()
        want = torch.nn.utils.clip_grad_norm_(params, float(max_norm[r]))
        assert torch.allclose(norms[r], want)
        for p, g in zip(params, mine):
            assert torch.allclose(g[r], p.grad)
