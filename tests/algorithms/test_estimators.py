"""The estimators beyond GRPO's: hand-computed values, brute force over subsets, properties."""

import itertools
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms import ADVANTAGES, ConfigError, build_algorithm
from algorithms.advantages import (maxrl_advantage, optimal_baseline_advantage, passk_advantage,
                                   reinforce_pp_advantage, rloo_advantage, shrinkage_advantage)

NEW = {"rloo": {}, "reinforce_pp": {}, "passk": {"k": 2}, "maxrl": {}, "shrinkage": {}, "optimal_baseline": {"kappa": 0.5}}
GROUP_LOCAL = ("rloo", "passk", "maxrl", "optimal_baseline")
R = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)


def close(a, b):
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=torch.float64), rtol=0, atol=1e-12)


def test_rloo_by_hand():
    # [1, 0, 0, 0]: 1 - 0, 0 - 1/3; [1, 1, 0, 0]: 1 - 1/3, 0 - 2/3
    close(rloo_advantage(R), [[1, -1 / 3, -1 / 3, -1 / 3], [2 / 3, 2 / 3, -2 / 3, -2 / 3], [0, 0, 0, 0]])
    close(rloo_advantage(R), 4 / 3 * (R - R.mean(-1, keepdim=True)))


def test_reinforce_pp_whitens_over_the_whole_batch():
    # group-centred: [.75, -.25, -.25, -.25], [.5, .5, -.5, -.5], zeros; batch mean 0,
    # Bessel variance over 12 responses: (0.5625 + 3 * 0.0625 + 4 * 0.25) / 11 = 1.75 / 11
    scale = 1 / math.sqrt(1.75 / 11 + 1e-8)
    centred = torch.tensor([[0.75, -0.25, -0.25, -0.25], [0.5, 0.5, -0.5, -0.5], [0, 0, 0, 0]], dtype=torch.float64)
    close(reinforce_pp_advantage(R, eps=1e-8), scale * centred)
    # one group's scale depends on the others: drop the degenerate group and it changes
    alone = reinforce_pp_advantage(R[:2], eps=0.0)
    close(alone[0], centred[0] / math.sqrt(1.75 / 7))


def verl_reinforce_pp(rewards):
    """verl's loop: group mean, then masked_whiten (mean, Bessel var over all responses, 1e-8)."""
    scores = [[r - sum(row) / len(row) for r in row] for row in rewards.tolist()]
    flat = [s for row in scores for s in row]
    mean = sum(flat) / len(flat)
    var = sum((s - mean) ** 2 for s in flat) / len(flat) * len(flat) / (len(flat) - 1)
    return torch.tensor([[(s - mean) / math.sqrt(var + 1e-8) for s in row] for row in scores], dtype=torch.float64)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(2, 5), st.integers(2, 6)), elements=st.floats(0, 1, width=32)))
def test_reinforce_pp_equals_verls_loop(r):
    r = torch.as_tensor(r)
    mixed = (r.amax(-1) > r.amin(-1))[:, None]
    torch.testing.assert_close(reinforce_pp_advantage(r, eps=1e-8), torch.where(mixed, verl_reinforce_pp(r), 0.0), rtol=1e-9, atol=1e-9)


def brute_passk(rewards, k):
    """PKPO by enumeration: s_i = mean over k-subsets holding i of their max; b_i = mean over the
    k'-subsets of the others of their max, k' = min(k, G - 1); A = k (s - b)."""
    out = []
    for row in rewards.tolist():
        g, kb = len(row), min(k, len(row) - 1)
        adv = []
        for i in range(g):
            held = [max(row[j] for j in c) for c in itertools.combinations(range(g), k) if i in c]
            others = [max(row[j] for j in c) for c in itertools.combinations([j for j in range(g) if j != i], kb)]
            adv.append(k * (sum(held) / len(held) - sum(others) / len(others)))
        out.append(adv if max(row) > min(row) else [0.0] * g)
    return torch.tensor(out, dtype=torch.float64)


def test_passk_by_hand():
    # k = 2, [1, 0, 0, 0]: correct s = 1, b = pass@2 of three wrong = 0 -> 2; wrong: s = pass@1 of
    # the others = 1/3, b = pass@2 of {1, 0, 0} = 1 - C(2,2)/C(3,2) = 2/3 -> 2 (1/3 - 2/3)
    close(passk_advantage(R, k=2)[0], [2, -2 / 3, -2 / 3, -2 / 3])
    close(passk_advantage(R, k=1), rloo_advantage(R))  # k = 1: RLOO
    # k = G: G (r_max - r_second) on the best response alone (verl's grpo_passk without std, times G)
    r = torch.tensor([[0.2, 0.9, 0.5, 0.1]], dtype=torch.float64)
    close(passk_advantage(r, k=4), [[0, 4 * 0.4, 0, 0]])
    close(passk_advantage(R, k=4), [[4, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])  # two correct: no best one


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(2, 7)), elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])),
       st.integers(1, 7))
def test_passk_equals_brute_force_over_subsets(r, k):
    r = torch.as_tensor(r)
    k = min(k, r.shape[-1])
    torch.testing.assert_close(passk_advantage(r, k=k), brute_passk(r, k), rtol=1e-9, atol=1e-12)


def test_maxrl_by_hand():
    # (r - p_hat) / p_hat: p_hat = 1/4 -> 3, -1; p_hat = 1/2 -> 1, -1; no success -> 0
    close(maxrl_advantage(R, eps=1e-6), [[3, -1, -1, -1], [1, 1, -1, -1], [0, 0, 0, 0]])
    close(maxrl_advantage(torch.tensor([[0.5, 0.0]], dtype=torch.float64), eps=1e-6), [[1, -1]])


def test_shrinkage_by_hand():
    # group means 1/4, 1/2, 0; batch mean 1/4; V = (0 + 1/16 + 1/16) / 2 = 1/16;
    # within = mean of s^2 / 4 = (0.25 / 4 + (1/3) / 4 + 0) / 3 = 7 / 144; w = 1 - (7/144) / (1/16) = 2/9
    w = 1 - (7 / 144) / (1 / 16)
    base = w * R.mean(-1, keepdim=True) + (1 - w) * 0.25
    close(shrinkage_advantage(R, keep_degenerate=True), R - base)
    close(shrinkage_advantage(R, keep_degenerate=False), torch.cat([(R - base)[:2], torch.zeros(1, 4, dtype=torch.float64)]))
    close(shrinkage_advantage(R[:1], keep_degenerate=False), R[:1] - 0.25)  # one group: w = 1, the group mean
    same = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # equal group means: V = 0, baseline = mean
    close(shrinkage_advantage(same, keep_degenerate=False), same - 0.5)
    noisy = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)  # V < within: w = 0
    close(shrinkage_advantage(noisy, keep_degenerate=False), noisy - noisy.mean())


def test_optimal_baseline_by_hand():
    close(optimal_baseline_advantage(R, kappa=1.0), rloo_advantage(R))  # equal norms: RLOO
    # kappa = 2, [1, 1, 0, 0]: a correct response's others {1, 0, 0}: b = 2 / (2 + 1 + 1) = 1/2;
    # a wrong one's others {1, 1, 0}: b = 4 / 5
    close(optimal_baseline_advantage(R, kappa=2.0)[1], [0.5, 0.5, -0.8, -0.8])
    # kappa = 1/2, [1, 0, 0, 0]: wrong responses' others {1, 0, 0}: b = 0.5 / 2.5
    close(optimal_baseline_advantage(R, kappa=0.5)[0], [1, -0.2, -0.2, -0.2])


rewards_strategy = hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 8)),
                              elements=st.floats(0, 1, width=32))


@settings(max_examples=80, deadline=None)
@given(rewards_strategy)
def test_every_estimator_is_finite_keeps_shapes_and_zeroes_degenerate_groups(r):
    r = torch.as_tensor(r)  # (R, P, G): leading run dimension
    degenerate = (r.amax(-1) == r.amin(-1))[..., None].expand_as(r)
    for name, params in NEW.items():
        params = {**params, **({"k": min(2, r.shape[-1])} if name == "passk" else {})}
        estimate = ADVANTAGES.build({"name": name, **params})
        a = estimate(r)
        assert a.shape == r.shape and torch.isfinite(a).all(), name
        assert torch.equal(a[degenerate], torch.zeros_like(a[degenerate])), name
        for run in range(r.shape[0]):  # runs are independent: batch statistics per run
            torch.testing.assert_close(a[run], estimate(r[run]), rtol=1e-12, atol=1e-12, msg=name)
        if name in GROUP_LOCAL:  # one group at a time
            torch.testing.assert_close(a[:, :1], estimate(r[:, :1]), rtol=1e-12, atol=1e-12, msg=name)


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(2, 8)), elements=st.sampled_from([0.0, 1.0])))
def test_binary_signs_follow_the_reward(r):
    r = torch.as_tensor(r)  # correct responses get advantage >= 0, wrong ones <= 0 (passk k >= 2: >= / <= too)
    for name, params in NEW.items():
        a = ADVANTAGES.build({"name": name, **params})(r)
        assert (a[r == 1] >= -1e-12).all() and (a[r == 0] <= 1e-12).all(), name


def test_passk_k_is_checked_against_the_group_size_at_build_time(make_cfg):
    base = {"name": "x", "advantage": {"name": "passk", "k": 9}, "loss": {"name": "ppo_clip"},
            "aggregation": {"name": "token_mean"}}
    with pytest.raises(ConfigError, match=r"algo.advantage.k: pass@k needs 1 <= k <= G; got k=9 with train.group_size=8"):
        build_algorithm(base, None, group_size=8)
    build_algorithm({**base, "advantage": {"name": "passk", "k": 8}}, None, group_size=8)
    with pytest.raises(ConfigError, match=r"algo.advantage.k: must be >= 1, got 0"):
        build_algorithm({**base, "advantage": {"name": "passk", "k": 0}})
    from experiments.training.build import build_trainer

    cfg = make_cfg("algo=grpo", "algo.advantage.name=passk", "~algo.advantage.eps", "+algo.advantage.k=9")
    with pytest.raises(ConfigError, match="k=9 with train.group_size=8"):
        build_trainer(cfg, None)
