"""Properties of every reweighter, and hand values for hadw_window, hadw_fixed, focal, agrae."""

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms import REWEIGHTERS
from algorithms.advantages import group_mean_advantage, group_norm_advantage

binary_rewards = hnp.arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(2, 10)), elements=st.sampled_from([0.0, 1.0]))


@settings(max_examples=150, deadline=None)
@given(binary_rewards, st.sampled_from(REWEIGHTERS.names()), st.booleans())
def test_every_reweighter_keeps_signs_and_is_finite(rewards, name, normalise):
    """Weights are non-negative: A' has A's sign (or is 0); degenerate groups (p_hat in {0, 1}) stay 0."""
    r = torch.as_tensor(rewards)
    a = group_norm_advantage(r, eps=1e-6) if normalise else group_mean_advantage(r)
    out, stats = REWEIGHTERS.build({"name": name})(a, r)
    assert out.shape == a.shape and torch.isfinite(out).all()
    assert (out * a >= 0).all()
    degenerate = r.amax(1) == r.amin(1)
    assert torch.equal(out[degenerate], torch.zeros_like(out[degenerate]))
    for v in stats.values():
        assert v.dim() == 0


@settings(max_examples=100, deadline=None)
@given(binary_rewards)
def test_disabled_reweighters_are_identity(rewards):
    r = torch.as_tensor(rewards)
    a = group_norm_advantage(r, eps=1e-6)
    assert torch.equal(REWEIGHTERS.build({"name": "none"})(a, r)[0], a)
    assert torch.allclose(REWEIGHTERS.build({"name": "focal", "gamma": 0.0})(a, r)[0], a)


def test_hadw_fixed_is_identity_at_its_anchor_with_unit_scale():
    r = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)  # p_hat 0.5, 1, 0.5
    a = group_norm_advantage(r, eps=1e-6)
    out, _ = REWEIGHTERS.build({"name": "hadw_fixed", "anchor": 0.5, "lambda_scale": 1.0})(a, r)
    assert torch.equal(out, a)


def test_hadw_window_anchor_includes_the_current_batch():
    rw = REWEIGHTERS.build({"name": "hadw_window", "window": 2, "lambda_scale": 1.0})
    batches = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]  # accuracies .25 .75 .5
    anchors = [0.25, 0.5, 0.625]  # mean of the last two, the current one included
    for rewards, anchor in zip(batches, anchors):
        r = torch.tensor([rewards], dtype=torch.float64)
        a = group_norm_advantage(r, eps=1e-6)
        out, stats = rw(a, r)
        assert stats["hadw/belief"].item() == pytest.approx(anchor)
        diff = r.mean().item() - anchor
        sgn = (diff > 0) - (diff < 0)
        assert out[0, 0].item() == pytest.approx(a[0, 0].item() * math.exp(-sgn * abs(diff)), rel=1e-9)


def test_focal_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    a = group_mean_advantage(r)
    out, _ = REWEIGHTERS.build({"name": "focal", "gamma": 2.0})(a, r)
    assert torch.allclose(out[0], a[0] * 0.75**2) and torch.allclose(out[1], a[1] * 0.25**2)


def agrae_reference(a, r, alpha, eps):
    """The released formula, one response at a time."""
    out = a.clone()
    p_bar = r.mean().item()
    for i in range(r.shape[0]):
        p = r[i].mean().item()
        for j in range(r.shape[1]):
            hard = 0.5 * a[i, j].item() / (math.sqrt(p) + eps)
            easy = 0.5 * a[i, j].item() / (1 - math.sqrt(p) + eps)
            v = (1 - p_bar) * easy + p_bar * hard
            out[i, j] = v * min(1.0, p_bar / alpha) if v > 0 else v
    return out


@settings(max_examples=100, deadline=None)
@given(binary_rewards, st.floats(0.2, 2.0))
def test_agrae_matches_the_released_formula(rewards, alpha):
    r = torch.as_tensor(rewards)
    a = group_norm_advantage(r, eps=1e-6)
    out, _ = REWEIGHTERS.build({"name": "agrae", "alpha": alpha})(a, r)
    assert torch.allclose(out, agrae_reference(a, r, alpha, 1e-6), rtol=1e-9, atol=1e-12)


def test_agrae_by_hand():
    # p_hat = 1/4: sqrt = 1/2, both foci equal A; p_bar = 5/8 scales the positive advantage.
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    a = group_norm_advantage(r, eps=0.0)
    out, _ = REWEIGHTERS.build({"name": "agrae", "eps": 1e-12})(a, r)
    assert out[0].tolist() == pytest.approx([1.5 * 0.625, -0.5, -0.5, -0.5])
    assert out[1].tolist() == [0.0] * 4


@pytest.mark.parametrize("name", ["hadw", "hadw_window"])
def test_stateful_reweighters_round_trip(name):
    a, b = REWEIGHTERS.build({"name": name}), REWEIGHTERS.build({"name": name})
    r = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    for _ in range(3):
        a(group_norm_advantage(r, eps=1e-6), r)
    b.load_state_dict(a.state_dict())
    r2 = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    assert torch.equal(a(group_norm_advantage(r2, eps=1e-6), r2)[0], b(group_norm_advantage(r2, eps=1e-6), r2)[0])
