"""A separate generation engine (vLLM) without vLLM: the truncated importance-sampling weight in
the one loss path, the sampler/trainer mismatch metrics, and the error when vLLM is missing."""

import math
from pathlib import Path

import pytest
import torch

from algorithms import ConfigError, build_algorithm
from algorithms.aggregation import Totals
from experiments.training.build import compose_config
from experiments.training.metrics import response_metrics
from policies import POLICIES
from policies.base import Rollout

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
OLD = torch.tensor([[-1.0, -0.5, -2.0], [-0.3, -1.2, 0.0]], dtype=torch.float64)
SAMPLER = torch.tensor([[-1.1, -0.5, -3.0], [-0.2, -1.2, 9.9]], dtype=torch.float64)  # 9.9: padding, ignored


def rollout(sampler_logp=SAMPLER) -> Rollout:
    return Rollout(prompt_index=torch.zeros(2, dtype=torch.long), prompt_tokens=torch.zeros(2, 0, dtype=torch.long),
                   prompt_mask=torch.zeros(2, 0), tokens=torch.ones(2, 3, dtype=torch.long), mask=MASK, old_logp=OLD,
                   texts=("a", "b"), group_size=2, sampler_logp=sampler_logp,
                   advantages=torch.tensor([1.0, -0.5], dtype=torch.float64))


def grpo(**extra):
    """The grpo preset's stages (experiments/conf/algo/grpo.yaml), plus ``extra``."""
    return build_algorithm({"name": "grpo", "advantage": {"name": "group_norm"},
                            "loss": {"name": "ppo_clip", "eps_low": 0.2, "eps_high": 0.2},
                            "aggregation": {"name": "seq_mean_token_mean"}, **extra})


def test_tis_weight_multiplies_the_policy_loss_by_hand():
    algo = grpo(tis={"cap": 2.0})
    logp = OLD.clone().requires_grad_(True)  # on-policy for the trainer: ratio 1, nothing clipped
    loss, stats = algo.objective(logp, rollout(), Totals.of(MASK))
    # w = min(exp(old - sampler), 2): exp(0.1), 1, min(e, 2) = 2 | exp(-0.1), 1
    w0 = [math.exp(0.1), 1.0, 2.0]
    w1 = [math.exp(-0.1), 1.0]
    # ppo_clip at ratio 1: per-token -A w; seq_mean_token_mean: mean over tokens, then over responses
    expected = (-1.0 * sum(w0) / 3 + 0.5 * sum(w1) / 2) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(-0.446090, abs=1e-6)
    assert stats["tis_weight"].item() == pytest.approx((sum(w0) + sum(w1)) / 5, abs=1e-12)
    assert stats["tis_capped_frac"].item() == pytest.approx(1 / 5)
    loss.backward()  # the weight is detached: d/dlogp = -A w / (T_b * B) at ratio 1
    grad = torch.tensor([[-w / 6 for w in w0], [0.5 * w / 4 for w in w1] + [0.0]], dtype=torch.float64)
    assert torch.allclose(logp.grad, grad, atol=1e-12)


def test_tis_off_leaves_the_loss_unchanged_and_on_needs_sampler_logp():
    logp = OLD.clone()
    plain, stats = grpo().objective(logp, rollout(), Totals.of(MASK))
    assert plain.item() == pytest.approx((-1.0 + 0.5) / 2, abs=1e-12) and "tis_weight" not in stats
    same, _ = grpo(tis={"cap": 2.0}).objective(logp, rollout(sampler_logp=OLD.clone()), Totals.of(MASK))
    assert same.item() == pytest.approx(plain.item(), abs=1e-12)  # no mismatch: weight 1
    with pytest.raises(ValueError, match="sampler_logp"):
        grpo(tis={"cap": 2.0}).objective(logp, rollout(sampler_logp=None), Totals.of(MASK))
    with pytest.raises(ConfigError, match="algo.tis.cap"):
        grpo(tis={"cap": 0.0})


def test_sampler_mismatch_metrics_by_hand():
    m = response_metrics(rollout())
    d = [0.1, 0.0, 1.0, -0.1, 0.0]  # old - sampler on the five response tokens
    assert m["sampler/logp_abs_diff"].item() == pytest.approx(sum(abs(x) for x in d) / 5, abs=1e-9)
    assert m["sampler/logp_max_abs_diff"].item() == pytest.approx(1.0, abs=1e-9)
    assert m["sampler/kl"].item() == pytest.approx(sum(math.exp(x) - x - 1 for x in d) / 5, abs=1e-9)
    assert "sampler/kl" not in response_metrics(rollout(sampler_logp=None))


def test_vllm_sampler_without_vllm_fails_at_start_saying_how_to_get_it(tmp_path, monkeypatch):
    from importlib.util import find_spec

    from experiments.training.build import build_trainer

    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "vllm" else find_spec(name, *a))
    cache = tmp_path / "cache"
    cfg = compose_config("policy=tiny-qwen3", "policy.sampler=vllm", "env=arithmetic", f"policy.model_path={cache}")
    with pytest.raises(ConfigError, match=r"bash \.ci/vllm.*\.venv-vllm/bin/python -m experiments\.run"):
        build_trainer(cfg, tmp_path / "run")
    assert not Path(cache).exists()  # before the warm start: nothing built or loaded
    with pytest.raises(ConfigError, match="policy.old_logp: must be recompute with sampler=vllm"):
        POLICIES.build({**cfg["policy"], "old_logp": "sampler"}, "policy")
