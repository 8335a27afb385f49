import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.advantages import group_mean_advantage, group_norm_advantage

rewards_strategy = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 6), st.integers(2, 9)),
    elements=st.floats(0, 1, allow_nan=False, width=32),
)


def test_group_norm_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    # mean 0.25, Bessel std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    a = group_norm_advantage(r, eps=0.0)
    assert torch.allclose(a, torch.tensor([[1.5, -0.5, -0.5, -0.5]], dtype=torch.float64), atol=1e-12)
    a_eps = group_norm_advantage(r, eps=1e-6)
    assert a_eps[0, 0].item() == pytest.approx(0.75 / (0.5 + 1e-6), rel=1e-9)


def test_group_norm_two_samples():
    r = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    # std (ddof 1) = sqrt(0.5) -> advantages -+ 0.5 / sqrt(0.5)
    a = group_norm_advantage(r, eps=0.0)
    assert a[0, 1].item() == pytest.approx(0.5 / math.sqrt(0.5), rel=1e-12)


def test_group_mean_by_hand():
    r = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.2, 0.4, 0.6, 0.8]], dtype=torch.float64)
    expected = torch.tensor([[0.5, 0.5, -0.5, -0.5], [-0.3, -0.1, 0.1, 0.3]], dtype=torch.float64)
    assert torch.allclose(group_mean_advantage(r), expected, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(rewards_strategy)
def test_group_advantages_sum_to_zero(r):
    r = torch.as_tensor(r)
    for a in (group_norm_advantage(r, eps=1e-6), group_mean_advantage(r)):
        assert torch.allclose(a.sum(dim=1), torch.zeros(r.shape[0], dtype=r.dtype), atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5), st.integers(2, 12), st.floats(0, 1))
def test_degenerate_group_has_zero_advantage(p, g, value):
    r = torch.full((p, g), value, dtype=torch.float64)
    assert torch.equal(group_norm_advantage(r, eps=1e-6), torch.zeros_like(r))
    assert torch.equal(group_mean_advantage(r), torch.zeros_like(r))


@settings(max_examples=100, deadline=None)
@given(rewards_strategy)
def test_group_norm_is_scaled_group_mean(r):
    r = torch.as_tensor(r)
    std = r.std(dim=1, keepdim=True)
    assert torch.allclose(group_norm_advantage(r, eps=1e-6) * (std + 1e-6), group_mean_advantage(r), atol=1e-9)
