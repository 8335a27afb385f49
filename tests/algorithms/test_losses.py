"""Losses: plain-loop re-implementations, hand-derived gradients, aggregations, the whole family."""

import math

import pytest
import torch
from algorithms.aggregation import seq_mean_token_mean, token_mean
from algorithms.losses import ppo_clip_loss
from algorithms import AGGREGATIONS, ConfigError, build_algorithm
from algorithms.losses import cispo_loss, gspo_loss, k3_kl


PPO = dict(eps_low=0.2, eps_high=0.28, dual_clip=None)


def test_ppo_clip_values_by_hand():
    old = torch.zeros(4, 1, dtype=torch.float64)
    ratio = torch.tensor([[1.1], [1.5], [0.5], [0.9]], dtype=torch.float64)
    adv = torch.tensor([[1.0], [1.0], [-2.0], [-2.0]], dtype=torch.float64)
    per_token, stats = ppo_clip_loss(ratio.log(), old, adv, torch.ones(4, 1), **PPO)
    # unclipped: -A r; A > 0 above 1 + eps_high: -A (1.28); A < 0 below 1 - eps_low: -A 0.8
    expected = torch.tensor([[-1.1], [-1.28], [2 * 0.8], [2 * 0.9]], dtype=torch.float64)
    assert torch.allclose(per_token, expected, atol=1e-12)
    assert stats["clip_frac"].item() == pytest.approx(0.5)


def test_ppo_clip_gradient_zero_when_clipped_and_full_when_not():
    logp = torch.tensor([[math.log(1.5)], [math.log(1.1)]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0], [1.0]], dtype=torch.float64)
    per_token, _ = ppo_clip_loss(logp, torch.zeros(2, 1, dtype=torch.float64), adv, torch.ones(2, 1), **PPO)
    per_token.sum().backward()
    # clipped (ratio 1.5 > 1.28, A > 0): no gradient. unclipped: d(-A r)/dlogp = -A r = -1.1
    assert logp.grad[0, 0].item() == 0.0
    assert logp.grad[1, 0].item() == pytest.approx(-1.1, rel=1e-12)


def test_dual_clip_bounds_negative_advantage_loss():
    logp = torch.tensor([[math.log(10.0)]], dtype=torch.float64)
    adv = torch.tensor([[-1.0]], dtype=torch.float64)
    per_token, _ = ppo_clip_loss(logp, torch.zeros(1, 1, dtype=torch.float64), adv, torch.ones(1, 1),
                                 eps_low=0.2, eps_high=0.2, dual_clip=3.0)
    assert per_token.item() == pytest.approx(3.0)  # min(10, 3) * |A|


def test_log_ratio_is_clamped():
    logp = torch.tensor([[100.0]])
    per_token, _ = ppo_clip_loss(logp, torch.zeros(1, 1), torch.tensor([[-1.0]]), torch.ones(1, 1), **PPO)
    assert torch.isfinite(per_token).all()


def test_aggregations_on_hand_masks():
    per_token = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float32)
    # token_mean: (1+2+3+4+10+20) / 6
    assert token_mean(per_token, mask).item() == pytest.approx(40 / 6)
    # seq_mean_token_mean: mean(2.5, 15)
    assert seq_mean_token_mean(per_token, mask).item() == pytest.approx(8.75)
    # padding values never leak in
    poisoned = per_token.clone()
    poisoned[1, 2:] = 1e6
    assert token_mean(poisoned, mask).item() == pytest.approx(40 / 6)
    assert seq_mean_token_mean(poisoned, mask).item() == pytest.approx(8.75)


def random_batch(b=6, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    old = logp + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)
    adv = torch.randn(b, 1, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).double()
    return logp, old, adv, mask


def loop_ppo(logp, old, adv, mask, lo, hi, dual):
    out = torch.zeros_like(logp)
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            r = math.exp(logp[b, t] - old[b, t])
            a = adv[b, 0].item()
            v = max(-a * r, -a * min(max(r, 1 - lo), 1 + hi))
            if dual is not None and a < 0:
                v = min(v, -a * dual)
            out[b, t] = v
    return out


def loop_gspo(logp, old, adv, mask, lo, hi):
    out = torch.zeros_like(logp)
    for b in range(logp.shape[0]):
        n = int(mask[b].sum())
        s = math.exp(sum(logp[b, t] - old[b, t] for t in range(n)) / n)
        a = adv[b, 0].item()
        out[b, :] = max(-a * s, -a * min(max(s, 1 - lo), 1 + hi))
    return out


def loop_cispo(logp, old, adv, mask, lo, hi):
    out = torch.zeros_like(logp)
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            r = math.exp(logp[b, t] - old[b, t])
            w = min(r, 1 + hi) if lo is None else min(max(r, 1 - lo), 1 + hi)
            out[b, t] = -w * adv[b, 0] * logp[b, t]
    return out


@pytest.mark.parametrize("seed", range(5))
def test_losses_match_loop_reimplementations(seed):
    logp, old, adv, mask = random_batch(seed=seed)
    valid = mask.bool()
    for dual in (None, 3.0):
        got, _ = ppo_clip_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28, dual_clip=dual)
        assert torch.allclose(got[valid], loop_ppo(logp, old, adv, mask, 0.2, 0.28, dual)[valid], atol=1e-12)
    got, _ = gspo_loss(logp, old, adv, mask, eps_low=0.1, eps_high=0.15)
    assert torch.allclose(got[valid], loop_gspo(logp, old, adv, mask, 0.1, 0.15)[valid], atol=1e-12)
    for lo in (None, 0.2):
        got, _ = cispo_loss(logp, old, adv, mask, eps_low=lo, eps_high=0.28)
        assert torch.allclose(got[valid], loop_cispo(logp, old, adv, mask, lo, 0.28)[valid], atol=1e-12)


def test_gspo_gradient_is_the_sequence_level_gradient():
    """grad of seq_mean_token_mean(gspo) = grad of mean_i max(-A s_i, -A clip(s_i)) with s_i differentiable."""
    logp, old, adv, mask = random_batch(seed=3)
    lo, hi = 0.05, 0.08
    x = logp.clone().requires_grad_(True)
    per_token, _ = gspo_loss(x, old, adv, mask, eps_low=lo, eps_high=hi)
    AGGREGATIONS.build({"name": "seq_mean_token_mean"})(per_token, mask).backward()

    y = logp.clone().requires_grad_(True)
    s = torch.exp(((y - old) * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True))  # (B, 1)
    seq = torch.maximum(-adv * s, -adv * s.clamp(1 - lo, 1 + hi))
    seq.mean().backward()
    assert torch.allclose(x.grad, y.grad, atol=1e-12)
    assert torch.equal(x.grad[mask == 0], torch.zeros_like(x.grad[mask == 0]))
    clipped = (s.detach() < 1 - lo) & (adv < 0) | (s.detach() > 1 + hi) & (adv > 0)
    assert clipped.any() and (x.grad[clipped.squeeze(1)] == 0).all()  # clipped sequences: no gradient


def test_cispo_gradient_flows_only_through_logp():
    logp, old, adv, mask = random_batch(seed=4)
    x = logp.clone().requires_grad_(True)
    o = old.clone().requires_grad_(True)
    per_token, _ = cispo_loss(x, o, adv, mask, eps_low=None, eps_high=0.1)
    (per_token * mask).sum().backward()
    w = torch.exp(logp - old).clamp(max=1.1)
    assert torch.allclose(x.grad, -w * adv * mask, atol=1e-12)  # d/dlogp of -w A logp with w held fixed
    assert o.grad is None or torch.count_nonzero(o.grad) == 0


def test_aggregation_modes_on_hand_masks():
    per_token = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float32)
    get = lambda name, **kw: AGGREGATIONS.build({"name": name, **kw})(per_token, mask).item()  # noqa: E731
    assert get("token_mean") == pytest.approx(40 / 6)
    assert get("seq_mean_token_mean") == pytest.approx((2.5 + 15) / 2)
    assert get("seq_mean_token_sum") == pytest.approx((10 + 30) / 2)
    assert get("seq_mean_token_sum_norm", max_length=10) == pytest.approx((10 + 30) / 2 / 10)
    # L_max is the generation budget, never the padded width of a minibatch: it is required.
    with pytest.raises(ConfigError, match=r"aggregation\.max_length: missing"):
        get("seq_mean_token_sum_norm")


def test_k3_kl_by_hand():
    logp = torch.tensor([[math.log(0.5)]], dtype=torch.float64)
    ref = torch.tensor([[math.log(0.25)]], dtype=torch.float64)
    # d = log(0.25 / 0.5) = -log 2: e^d - d - 1 = 0.5 + log 2 - 1
    assert k3_kl(logp, ref).item() == pytest.approx(0.5 + math.log(2) - 1, rel=1e-12)
    assert k3_kl(ref, ref).item() == 0.0


def test_gspo_with_token_mean_is_refused():
    cfg = {"name": "gspo", "advantage": {"name": "group_norm"}, "loss": {"name": "gspo"},
           "aggregation": {"name": "token_mean"}}
    with pytest.raises(ConfigError, match=r"algo\.aggregation\.name: loss 'gspo' requires seq_mean_token_mean"):
        build_algorithm(cfg)
