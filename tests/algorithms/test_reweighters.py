"""Reweighters: HA-DW's rules and state, properties of every reweighter, hand values."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from algorithms import REWEIGHTERS, ConfigError
from algorithms.advantages import group_norm_advantage
from algorithms.reweighters import HADW, HADWParams
import hypothesis.extra.numpy as hnp
from algorithms.advantages import group_mean_advantage


def phi_reference(p_hat, anchor, a_sign, lam):
    """Phi by the paper's formula, written out for one response."""
    sgn = lambda x: (x > 0) - (x < 0)  # noqa: E731
    diff = p_hat - anchor
    return lam * math.exp(-sgn(a_sign) * sgn(diff) * abs(diff))


def test_hadw_weights_by_hand():
    hadw = HADW(HADWParams(lambda_scale=1.5, c0=0.5))
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    a = group_norm_advantage(r, eps=1e-6)
    out, stats = hadw(a, r)
    # prompt 0: p_hat 0.25 < C 0.5 (hard): correct gets 1.5 e^{0.25}, wrong 1.5 e^{-0.25}
    assert out[0, 0].item() == pytest.approx(a[0, 0].item() * 1.5 * math.exp(0.25), rel=1e-12)
    assert out[0, 1].item() == pytest.approx(a[0, 1].item() * 1.5 * math.exp(-0.25), rel=1e-12)
    # prompt 1: p_hat 0.75 (easy): correct damped, wrong amplified
    assert out[1, 0].item() == pytest.approx(a[1, 0].item() * 1.5 * math.exp(-0.25), rel=1e-12)
    assert out[1, 3].item() == pytest.approx(a[1, 3].item() * 1.5 * math.exp(0.25), rel=1e-12)
    assert torch.equal(out[2], torch.zeros(4, dtype=torch.float64))  # degenerate stays 0
    assert stats["hadw/belief"].item() == pytest.approx(0.5)


def test_hadw_belief_recursion_by_hand():
    """C_0 = 0.5; step 1 uses sigma = 0.5 (no history); later steps the std of beliefs."""
    p = HADWParams(eta=1.0, window=3, c0=0.5, sigma_floor=0.0)
    hadw = HADW(p)
    accs = [0.2, 0.4, 0.9, 0.6]
    beliefs = [0.5]
    expected_eta = []
    for y in accs:
        n = min(len(beliefs), 3)
        sigma = 0.5 if n < 2 else float(np.std(beliefs[-3:]))
        eta_t = min(1.0, p.eta * sigma)
        expected_eta.append(eta_t)
        beliefs.append((1 - eta_t) * beliefs[-1] + eta_t * y)
    for t, y in enumerate(accs):
        r = torch.zeros(1, 10, dtype=torch.float64)
        r[0, : int(round(y * 10))] = 1.0
        _, stats = hadw(group_norm_advantage(r, eps=1e-6), r)
        assert stats["hadw/belief"].item() == pytest.approx(beliefs[t], abs=1e-6)  # prior used
        assert stats["hadw/eta"].item() == pytest.approx(expected_eta[t], abs=1e-6)
    assert hadw.prior.item() == pytest.approx(beliefs[-1], abs=1e-12)
    assert expected_eta[0] == 0.5  # eta * 0.5 when fewer than two beliefs exist


def test_hadw_sigma_floor_prevents_freeze():
    """Without the floor a flat start freezes the belief; with it, the belief follows."""
    frozen, floored = HADW(HADWParams(sigma_floor=0.0)), HADW(HADWParams(sigma_floor=0.05))
    flat = torch.tensor([[1.0, 0.0]], dtype=torch.float64)  # batch accuracy 0.5 = c0
    high = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)  # 0.75
    for r in [flat] * 3 + [high] * 100:
        for h in (frozen, floored):
            h(group_norm_advantage(r, eps=1e-6), r)
    assert frozen.prior.item() == pytest.approx(0.5)
    assert floored.prior.item() == pytest.approx(0.75, abs=0.01)


hard_anchor = st.floats(0.05, 0.95)


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 16), st.data(), hard_anchor, st.floats(0.1, 3.0))
def test_phi_sign_rules(g, data, anchor, lam):
    k = data.draw(st.integers(1, g - 1))  # a mixed group: k correct of g
    p_hat = k / g
    assume(abs(p_hat - anchor) > 1e-9)
    r = torch.zeros(1, g, dtype=torch.float64)
    r[0, :k] = 1.0
    hadw = HADW(HADWParams(lambda_scale=lam, c0=anchor))
    a = group_norm_advantage(r, eps=1e-6)
    out, _ = hadw(a, r)
    phi = out / a  # (1, G); A != 0 in a mixed group
    correct, wrong = phi[0, 0].item(), phi[0, -1].item()
    assert correct == pytest.approx(phi_reference(p_hat, anchor, +1, lam), rel=1e-9)
    assert wrong == pytest.approx(phi_reference(p_hat, anchor, -1, lam), rel=1e-9)
    if p_hat < anchor:  # harder than the anchor: boost correct, damp wrong
        assert correct > lam and wrong < lam
    else:
        assert correct < lam and wrong > lam


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 12), st.integers(1, 6), st.floats(0.0, 1.0))
def test_hadw_keeps_degenerate_groups_at_zero(g, p, value):
    r = torch.full((p, g), float(value > 0.5), dtype=torch.float64)
    out, _ = HADW(HADWParams())(group_norm_advantage(r, eps=1e-6), r)
    assert torch.equal(out, torch.zeros_like(r))


def test_identity_reweighter():
    ident = REWEIGHTERS.build({"name": "none"})
    a = torch.randn(3, 4)
    out, stats = ident(a, torch.rand(3, 4))
    assert torch.equal(out, a)


def test_hadw_state_round_trip():
    a, b = HADW(HADWParams()), HADW(HADWParams())
    r = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    for _ in range(4):
        a(group_norm_advantage(r, eps=1e-6), r)
    b.load_state_dict(a.state_dict())
    r2 = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    out_a, s_a = a(group_norm_advantage(r2, eps=1e-6), r2)
    out_b, s_b = b(group_norm_advantage(r2, eps=1e-6), r2)
    assert torch.equal(out_a, out_b) and torch.equal(a.prior, b.prior)


@pytest.mark.parametrize(
    "cfg, field",
    [
        ({"name": "hadw", "lambda_scale": 0}, "reweight.lambda_scale"),
        ({"name": "hadw", "lambda_scale": -1}, "reweight.lambda_scale"),
        ({"name": "hadw", "eta": float("nan")}, "reweight.eta"),
        ({"name": "hadw", "window": 1}, "reweight.window"),
        ({"name": "hadw", "c0": 1.5}, "reweight.c0"),
        ({"name": "hadw", "lamda_scale": 1}, "reweight.lamda_scale"),
        ({"name": "nope"}, "reweight.name"),
    ],
)
def test_invalid_reweighter_config_names_the_field(cfg, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        REWEIGHTERS.build(cfg, "reweight")


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
