"""Closed forms against brute-force enumeration, Monte Carlo, symmetries; the report CLI."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms import theory as T


def enumerate_conditional(p, g, value):
    """E[value(p_hat) | S] over all 2^G reward vectors."""
    num = den = 0.0
    for rewards in itertools.product((0, 1), repeat=g):
        r = sum(rewards)
        if 1 <= r <= g - 1:
            w = p**r * (1 - p) ** (g - r)
            num += w * value(r / g)
            den += w
    return num / den


PS = [0.013, 0.1, 0.25, 0.37, 0.5, 0.61, 0.8, 0.97]


@pytest.mark.parametrize("g", range(2, 11))
def test_closed_forms_equal_enumeration(g):
    for p in PS:
        assert T.expected_group_mean(p, g) == pytest.approx(enumerate_conditional(p, g, lambda m: m), abs=1e-12)
        closed = (p - p**g) / (1 - (1 - p) ** g - p**g)  # Theorem 1's formula, literally
        assert T.expected_group_mean(p, g) == pytest.approx(closed, abs=1e-12)
        for eps in (0.0, 0.05, 0.2):
            under = enumerate_conditional(p, g, lambda m: float(m - p > eps))
            over = enumerate_conditional(p, g, lambda m: float(p - m > eps))
            assert T.tail_probability(p, g, eps) == pytest.approx(under, abs=1e-12)
            assert T.tail_probability(p, g, eps, side="over") == pytest.approx(over, abs=1e-12)
        for reward in (0, 1):
            for fix in (T.HADWFix(0.4, 1.3), T.FocalFix(2.0), T.AGRAEFix(0.3)):
                brute = enumerate_conditional(p, g, lambda m: float(fix(np.float64(reward - m), np.float64(m))) - (reward - p))
                assert T.corrected_bias(p, g, reward, fix) == pytest.approx(brute, abs=1e-12)


def test_paper_tail_formula_with_floor():
    """Theorem 2 as printed: sum from floor(G (p + eps)) + 1 to G - 1, over P(S)."""
    g, p, eps = 8, 0.2, 0.07
    k0 = math.floor(g * (p + eps)) + 1
    num = sum(math.comb(g, k) * p**k * (1 - p) ** (g - k) for k in range(k0, g))
    assert T.tail_probability(p, g, eps) == pytest.approx(num / (1 - (1 - p) ** g - p**g), abs=1e-12)


def test_underestimation_probability_is_exact():
    # against a fine midpoint rule over the enumerated conditional probability
    for g, (a, b) in [(3, (0.0, 0.5)), (5, (0.5, 1.0)), (8, (0.0, 0.25))]:
        mids = (np.arange(4000) + 0.5) / 4000 * (b - a) + a
        ref = np.mean([enumerate_conditional(p, g, lambda m, p=p: float(m > p)) for p in mids])
        assert T.underestimation_probability(g, a, b) == pytest.approx(ref, abs=2e-4)
    # the paper's Corollary 1 claims, G = 2..8
    for g in range(2, 9):
        assert T.underestimation_probability(g, 0, 0.5) > 0.63
        assert T.underestimation_probability(g, 0, 0.25) > 0.78
        assert T.underestimation_probability(g, 0, 0.125) == pytest.approx(1.0, abs=1e-12)
        assert T.underestimation_probability(g, 0.5, 1) == pytest.approx(1 - T.underestimation_probability(g, 0, 0.5), abs=1e-12)


def test_monte_carlo_within_four_standard_errors():
    for g, p in [(2, 0.3), (4, 0.15), (8, 0.7), (16, 0.05)]:
        mc = T.mc_expected_group_mean(p, g, 400_000, seed=g)
        assert abs(mc.estimate - T.expected_group_mean(p, g)) <= 4 * mc.stderr + 1e-12  # G = 2: exact, SE 0
        mc = T.mc_tail_probability(p, g, 0.05, 400_000, seed=g)
        assert abs(mc.estimate - T.tail_probability(p, g, 0.05)) <= 4 * mc.stderr + 1e-12
    mc = T.mc_underestimation_probability(6, 0.0, 0.5, 400_000, seed=1)
    assert abs(mc.estimate - T.underestimation_probability(6, 0.0, 0.5)) < 4 * mc.stderr
    mc = T.mc_rare_mode_miss_probability(6, 0.6, 0.05, 400_000, seed=2)
    assert abs(mc.estimate - T.rare_mode_miss_probability(6, 0.6, 0.05)) < 4 * mc.stderr


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(2, 40))
def test_bias_symmetry_and_signs(p, g):
    b, b_mirror = T.advantage_bias(p, g), T.advantage_bias(1 - p, g)
    assert b == pytest.approx(-b_mirror, abs=1e-9)
    if p < 0.5 - 1e-6:
        assert b > 0  # E[p_hat | S] > p: the advantage of a hard prompt is under-estimated
    elif p > 0.5 + 1e-6:
        assert b < 0
    assert abs(T.advantage_bias(0.5, g)) < 1e-12


def test_limits_and_certainty_region():
    assert T.expected_group_mean(0.0, 8) == pytest.approx(1 / 8)
    assert T.expected_group_mean(1.0, 8) == pytest.approx(7 / 8)
    assert T.expected_group_mean(1e-9, 8) == pytest.approx(1 / 8, abs=1e-6)
    assert T.expected_group_mean(0.3, 2) == pytest.approx(0.5)  # G = 2: S forces p_hat = 1/2
    lo, hi = T.certainty_region(8)
    assert (lo, hi) == (0.125, 0.875)
    for p in (0.01, 0.1, 0.124):  # p < 1/G: every non-degenerate group has p_hat > p
        assert T.tail_probability(p, 8, 0.0) == pytest.approx(1.0, abs=1e-12)
    for p in (0.876, 0.95):
        assert T.tail_probability(p, 8, 0.0, side="over") == pytest.approx(1.0, abs=1e-12)
    assert T.tail_probability(0.2, 8, 0.0) < 1.0  # outside the region it is not certain


def enumerate_rare(n, mu, tau):
    probs = {"rare": tau, "other": mu - tau, "wrong": 1 - mu}
    total = 0.0
    for outcome in itertools.product(probs, repeat=n):
        mixed = any(o != "wrong" for o in outcome) and any(o == "wrong" for o in outcome)
        if mixed and "rare" not in outcome:
            total += math.prod(probs[o] for o in outcome)
    return total


def test_rare_mode_formula_equals_enumeration_and_is_non_monotonic():
    for n in range(1, 8):
        for mu, tau in [(0.6, 0.05), (0.3, 0.1), (0.9, 0.2)]:
            assert T.rare_mode_miss_probability(n, mu, tau) == pytest.approx(enumerate_rare(n, mu, tau), abs=1e-12)
    curve = T.rare_mode_miss_probability(np.arange(1, 200), 0.6, 0.05)
    peak = int(np.argmax(curve))
    assert curve[0] == 0.0 and 0 < peak < len(curve) - 1
    assert np.all(np.diff(curve[: peak + 1]) > 0) and np.all(np.diff(curve[peak:]) < 0)


def test_nonbinary_bias_needs_the_sigma_event():
    free = T.mc_nonbinary_bias(T.sample_beta_rewards(0.2, 2.0), 0.2, 8, sigma=0.0, n=200_000)
    assert abs(free.estimate) < 4 * free.stderr  # every continuous group updates: no selection, no bias
    hard = T.mc_nonbinary_bias(T.sample_beta_rewards(0.2, 2.0), 0.2, 8, sigma=0.5, n=200_000)
    easy = T.mc_nonbinary_bias(T.sample_beta_rewards(0.8, 2.0), 0.8, 8, sigma=0.5, n=200_000)
    assert hard.estimate > 4 * hard.stderr and easy.estimate < -4 * easy.stderr
    m = T.truncated_gaussian_mean(0.2, 0.3)
    draws = T.sample_truncated_gaussian_rewards(0.2, 0.3)(np.random.default_rng(0), (400_000,))
    assert draws.min() >= 0 and draws.max() <= 1
    assert draws.mean() == pytest.approx(m, abs=4 * draws.std() / math.sqrt(draws.size))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="G must be an integer >= 2"):
        T.expected_group_mean(0.3, 1)
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
        T.advantage_bias(1.5, 4)
    with pytest.raises(ValueError, match="0 <= a < b <= 1"):
        T.underestimation_probability(4, 0.5, 0.5)
    with pytest.raises(ValueError, match="tau <= mu"):
        T.rare_mode_miss_probability(4, 0.1, 0.2)


def test_theory_cli_writes_figures_and_report(tmp_path):
    from experiments.claims.closed_forms import main

    out = main([f"out={tmp_path / 'th'}", "mc_groups=20000"])
    names = {p.name for p in out.iterdir()}
    for fig in ("bias_vs_p.png", "corollary1.png", "tail_probability.png", "nonbinary_bias.png", "fixes_bias.png",
                "rare_mode_miss.png", "estimators_bias.png"):
        assert fig in names and (out / fig).stat().st_size > 10_000
        assert f"`{fig}`:" in (out / "report.md").read_text()
    rows = (out / "corollary1.csv").read_text().splitlines()
    assert rows[0] == "G,P(G; 0.0; 0.5),P(G; 0.0; 0.25),P(G; 0.5; 1.0),P(G; 0.75; 1.0)" and len(rows) == 16
    assert rows[7].startswith("8,0.6409,0.7811,0.3591,0.2189")
