"""Every estimator's conditional bias: closed forms against enumeration through the registered
estimator and against brute force, Monte Carlo within 4 standard errors, unbiasedness claims."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms import ADVANTAGES
from algorithms import theory as T
from algorithms import theory_estimators as E

LOCAL = {"group_mean": {}, "group_norm": {"eps": 0.0}, "rloo": {}, "passk": {"k": 3}, "maxrl": {"eps": 0.0},
         "optimal_baseline": {"kappa": 0.5}}
PS = [0.013, 0.2, 0.5, 0.77, 0.97]


@pytest.mark.parametrize("g", range(3, 9))
def test_closed_forms_equal_enumeration_through_the_estimators(g):
    for name, params in LOCAL.items():
        params = {**params, **({"k": min(3, g)} if name == "passk" else {})}
        for reward in (None, 0, 1):
            for target in ("pass@1", "own"):
                closed = E.estimator_bias(name, np.array(PS), g, reward, target=target, **params)
                enumerated = E.enumerated_bias(name, np.array(PS), g, reward, target=target, **params)
                np.testing.assert_allclose(closed, enumerated, rtol=1e-10, atol=1e-12, err_msg=f"{name} {reward} {target}")


def brute(name, p, g, reward, others=(), **params):
    """E[A_0 - target | S, r_0 = reward] over all 2^(G-1) (times the other prompts') reward vectors."""
    estimate = ADVANTAGES.build({"name": name, **params})
    num = den = 0.0
    for rest in itertools.product((0, 1), repeat=g - 1 + g * len(others)):
        mine, theirs = (reward, *rest[:g - 1]), rest[g - 1:]
        if not 1 <= sum(mine) <= g - 1:
            continue
        w = p ** sum(rest[:g - 1]) * (1 - p) ** (g - 1 - sum(rest[:g - 1]))
        for j, q in enumerate(others):
            block = theirs[j * g:(j + 1) * g]
            w *= q ** sum(block) * (1 - q) ** (g - sum(block))
        batch = torch.tensor([mine, *[theirs[j * g:(j + 1) * g] for j in range(len(others))]], dtype=torch.float64)
        num += w * (float(estimate(batch)[0, 0]) - (reward - p))
        den += w
    return num / den


def test_brute_force_over_reward_vectors():
    for name, params in LOCAL.items():
        for reward in (0, 1):
            assert E.estimator_bias(name, 0.3, 5, reward, **params) == pytest.approx(brute(name, 0.3, 5, reward, **params), abs=1e-12)
    for name in E.BATCH_ESTIMATORS:  # a batch of two prompts, G = 4
        for reward in (0, 1):
            assert E.estimator_bias(name, 0.3, 4, reward, others=(0.6,)) == pytest.approx(
                brute(name, 0.3, 4, reward, others=(0.6,)), abs=1e-12)


def test_group_mean_averaged_is_minus_advantage_bias():
    for g in (2, 4, 8, 16):
        np.testing.assert_allclose(E.estimator_bias("group_mean", np.array(PS), g), -T.advantage_bias(np.array(PS), g), atol=1e-12)
        # and every group-local estimator whose advantages sum to zero per group averages the same
        for name in ("rloo", "group_norm", "maxrl"):
            np.testing.assert_allclose(E.estimator_bias(name, np.array(PS), g, **LOCAL[name]),
                                       -T.advantage_bias(np.array(PS), g), atol=1e-10)


def unconditional(name, p, g, reward, **params):
    """E[A_0 | r_0 = reward] without conditioning on S, over the other G - 1 answers."""
    estimate = ADVANTAGES.build({"name": name, **params})
    total = 0.0
    for c in range(g):
        row = torch.tensor([[reward] + [1.0] * c + [0.0] * (g - 1 - c)], dtype=torch.float64)
        total += math.comb(g - 1, c) * p**c * (1 - p) ** (g - 1 - c) * float(estimate(row)[0, 0])
    return total


@pytest.mark.parametrize("g, k", [(4, 1), (4, 2), (6, 3), (6, 6), (8, 5)])
def test_passk_is_unbiased_for_the_pass_at_k_advantage(g, k):
    # without S: E[A | r] = k (1 - p)^(k-1) (r - p) exactly (PKPO), both rewards; at k = G the
    # baseline is the others' pass@(G-1): E[A | r] moves by a constant, the r = 1 / r = 0 gap stays
    for p in PS:
        got = [unconditional("passk", p, g, reward, k=k) for reward in (0, 1)]
        want = [E.target_advantage("passk", reward, p, g, "own", k=k) for reward in (0, 1)]
        assert got[1] - got[0] == pytest.approx(want[1] - want[0], abs=1e-12)
        if k < g:
            assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("name", ["rloo", "optimal_baseline"])
def test_leave_one_out_baselines_give_the_true_advantage_difference(name):
    # a baseline that never sees the response shifts E[A | r] by a constant: the r = 1 / r = 0 gap is 1
    for p in PS:
        gap = unconditional(name, p, 6, 1, kappa=0.5) - unconditional(name, p, 6, 0, kappa=0.5) if name != "rloo" else \
            unconditional(name, p, 6, 1) - unconditional(name, p, 6, 0)
        assert gap == pytest.approx(1.0, abs=1e-12)


def test_maxrl_success_average_is_unbiased_and_the_centring_is_not():
    # (r - p_hat) / p_hat = G r / c - 1 on solved groups: the G r / c part is unbiased for the
    # order-G truncation of log p, (1 - (1 - p)^G) / p per unit of r; the -1, applied on solved
    # groups only, shifts the correct-minus-wrong gap by -(1 - p)^(G - 1)
    g = 6
    for p in PS:
        gap = unconditional("maxrl", p, g, 1, eps=0.0) - unconditional("maxrl", p, g, 0, eps=0.0)
        assert gap == pytest.approx((1 - (1 - p) ** g) / p - (1 - p) ** (g - 1), abs=1e-10)


MC_CASES = [("group_mean", 0.2, 4, 1, (), {}), ("rloo", 0.7, 8, 0, (), {}), ("passk", 0.15, 8, 1, (), {"k": 4}),
            ("passk", 0.4, 6, None, (), {"k": 2}), ("maxrl", 0.3, 8, 1, (), {}), ("optimal_baseline", 0.6, 6, 0, (), {"kappa": 2.0}),
            ("reinforce_pp", 0.3, 8, 1, (0.1, 0.6, 0.9), {}), ("shrinkage", 0.25, 8, 0, (0.5, 0.8), {}),
            ("shrinkage", 0.25, 8, 1, (0.5, 0.8), {"keep_degenerate": True})]


@pytest.mark.parametrize("name, p, g, reward, others, params", MC_CASES, ids=[f"{c[0]}-{c[1]}-{c[3]}" for c in MC_CASES])
def test_monte_carlo_within_four_standard_errors(name, p, g, reward, others, params):
    target = "own" if name in ("passk", "maxrl") else "pass@1"
    exact = E.estimator_bias(name, p, g, reward, others=others, target=target, **params)
    mc = E.mc_estimator_bias(name, p, g, reward, others=others, target=target, n=100_000, seed=len(name), **params)
    assert mc.groups > 50_000 and abs(mc.estimate - exact) <= 4 * mc.stderr + 1e-12


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(2, 12), st.sampled_from([0, 1]), st.sampled_from(["group_mean", "group_norm", "rloo"]))
def test_antisymmetric_estimators_mirror(p, g, reward, name):
    # swapping correct and wrong (r -> 1 - r, p -> 1 - p) negates A_hat and A
    a = E.estimator_bias(name, p, g, reward, **LOCAL[name])
    b = E.estimator_bias(name, 1 - p, g, 1 - reward, **LOCAL[name])
    assert np.isfinite(a) and a == pytest.approx(-b, abs=1e-9)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="reward must be 0, 1 or None"):
        E.estimator_bias("rloo", 0.3, 4, 2)
    with pytest.raises(ValueError, match="target must be"):
        E.estimator_bias("rloo", 0.3, 4, 1, target="pass@2")
    with pytest.raises(ValueError, match="batch estimator: give the success rates"):
        E.estimator_bias("shrinkage", 0.3, 4, 1)
    with pytest.raises(ValueError, match="use mc_estimator_bias"):
        E.estimator_bias("reinforce_pp", 0.3, 8, 1, others=(0.5,) * 6)
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
        E.estimator_bias("rloo", 1.2, 4, 1)
    with pytest.raises(ValueError, match="G must be an integer >= 2"):
        E.estimator_bias("rloo", 0.3, 1, 1)
