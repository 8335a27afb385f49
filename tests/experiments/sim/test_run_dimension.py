"""Group maths with a leading run dimension [R, P, G] equals R separate calls on [P, G]."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms import ADVANTAGES, REWEIGHTERS
from experiments.training import metrics as M
from rlvr_env.bandit import rare_mode_share

REWEIGHT_CFGS = [{"name": "none"}, {"name": "hadw", "lambda_scale": 1.3}, {"name": "hadw", "sigma_floor": 0.0},
                 {"name": "hadw_window", "window": 3}, {"name": "hadw_fixed", "anchor": 0.4},
                 {"name": "focal", "gamma": 2.0}, {"name": "agrae", "alpha": 0.5}]


def batches(seed: int, runs=3, steps=6, p=5, g=4):
    gen = torch.Generator().manual_seed(seed)
    rates = torch.rand(runs, p, 1, generator=gen)  # runs differ, so beliefs drift apart
    return [(torch.rand(runs, p, g, generator=gen) < rates).float() for _ in range(steps)]


def assert_equal_stats(batched: dict, single: list[dict]):
    assert list(batched) == list(single[0])
    for key, value in batched.items():
        assert value.shape == (len(single),), key
        torch.testing.assert_close(value, torch.stack([s[key] for s in single]).to(value.dtype),
                                   rtol=1e-6, atol=1e-7, equal_nan=True, msg=key)


@pytest.mark.parametrize("cfg", REWEIGHT_CFGS, ids=lambda c: str(c))
@pytest.mark.parametrize("advantage", ["group_norm", "group_mean"])
def test_reweighter_with_run_dimension_equals_separate_runs(cfg, advantage):
    estimate = ADVANTAGES.build({"name": advantage})
    batched = REWEIGHTERS.build(cfg)
    singles = [REWEIGHTERS.build(cfg) for _ in range(3)]
    for rewards in batches(seed=len(str(cfg))):
        adv = estimate(rewards)  # (R, P, G)
        for r in range(3):
            torch.testing.assert_close(adv[r], estimate(rewards[r]), rtol=0, atol=0)
        out, stats = batched(adv, rewards)
        per_run = [s(adv[r], rewards[r]) for r, s in enumerate(singles)]
        torch.testing.assert_close(out, torch.stack([o for o, _ in per_run]), rtol=1e-6, atol=1e-7)
        assert_equal_stats(stats, [s for _, s in per_run])
    for name, value in batched.state_dict().items():
        if torch.is_tensor(value):  # state per run: [R] or [window, R]
            want = torch.stack([s.state_dict()[name] for s in singles], dim=-1)
            torch.testing.assert_close(value, want, rtol=1e-9, atol=1e-12)


def test_a_reweighter_keeps_its_run_shape():
    hadw = REWEIGHTERS.build({"name": "hadw"})
    rewards = batches(seed=0)[0]
    hadw(rewards[0], rewards[0])  # one run
    with pytest.raises(ValueError, match="state holds runs of shape"):
        hadw(rewards, rewards)  # then three


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), runs=st.integers(1, 4), p=st.integers(1, 8), g=st.integers(2, 6))
def test_metrics_with_run_dimension_equal_separate_runs(seed, runs, p, g):
    gen = torch.Generator().manual_seed(seed)
    rewards = (torch.rand(runs, p, g, generator=gen) < torch.rand(runs, p, 1, generator=gen)).float()
    adv, weighted = torch.randn(runs, p, g, generator=gen), torch.randn(runs, p, g, generator=gen)
    buckets = torch.randint(0, 3, (runs, p), generator=gen)
    p_true = torch.rand(runs, p, generator=gen)
    batched = M.group_metrics(rewards, adv, weighted, buckets, p_true)
    assert_equal_stats(batched, [M.group_metrics(rewards[r], adv[r], weighted[r], buckets[r], p_true[r]) for r in range(runs)])
    probs = torch.softmax(torch.randn(runs, p, 5, generator=gen), -1)
    p_all = probs[..., :2].sum(-1)
    rare = torch.randint(0, 2, (runs, p), generator=gen)
    torch.testing.assert_close(rare_mode_share(probs, p_all, rare),
                               torch.stack([rare_mode_share(probs[r], p_all[r], rare[r]) for r in range(runs)]))
    assert_equal_stats(M.exact_accuracy(p_all, buckets), [M.exact_accuracy(p_all[r], buckets[r]) for r in range(runs)])
