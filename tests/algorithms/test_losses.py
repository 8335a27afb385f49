import math

import pytest
import torch

from algorithms.aggregation import seq_mean_token_mean, token_mean
from algorithms.losses import ppo_clip_loss

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
