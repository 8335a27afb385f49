import numpy as np
import pytest
import torch

from algorithms import ConfigError
from algorithms.registry import build_params
from policies import TabularParams, TabularPolicy
from rlvr_env import BanditParams, BanditTask, bucket_of


def test_initial_success_probabilities_match_the_drawn_ones():
    params = BanditParams(num_prompts=500, num_answers=8, correct_answers=2, rare_mode_share=0.1, seed=3)
    task = BanditTask(params, seed=0)
    drawn = np.random.default_rng(3).uniform(0.02, 0.98, size=500)
    assert np.allclose(task.initial_p.numpy(), drawn, atol=1e-5)
    assert task.correct.sum(1).eq(2).all()
    # the rare correct answer holds 10 % of the correct mass
    probs = torch.softmax(task.initial_logits, -1)
    rare = probs[torch.arange(500), task.rare_answer]
    assert torch.allclose(rare / task.initial_p, torch.full((500,), 0.1), atol=1e-4)


def test_rare_share_metric_starts_at_the_configured_share():
    task = BanditTask(BanditParams(num_prompts=50, rare_mode_share=0.2), seed=0)
    policy = TabularPolicy(TabularParams(50, 16), task.initial_logits)
    assert task.policy_metrics(policy)["modes/rare_share"].item() == pytest.approx(0.2, abs=1e-4)
    single = BanditTask(BanditParams(num_prompts=5, correct_answers=1), seed=0)
    assert single.policy_metrics(TabularPolicy(TabularParams(5, 16), single.initial_logits)) == {}


def test_beta_difficulty_and_buckets():
    task = BanditTask(BanditParams(num_prompts=4000, difficulty="beta", beta=(0.5, 2.0)), seed=1)
    assert task.initial_p.mean().item() == pytest.approx(0.5 / 2.5, abs=0.02)
    b = bucket_of(torch.tensor([0.1, 1 / 3, 0.5, 2 / 3, 0.9]))
    assert b.tolist() == [0, 1, 1, 1, 2]


def test_rewards_and_exact_success():
    task = BanditTask(BanditParams(num_prompts=10, num_answers=4, correct_answers=1), seed=0)
    policy = TabularPolicy(TabularParams(10, 4), task.initial_logits)
    prompts = task.sample_prompts(5)
    roll = policy.sample(prompts, 7, torch.Generator().manual_seed(0))
    r = task.rewards(prompts, roll)
    assert r.shape == (5, 7)
    expected = task.correct[roll.prompt_index, roll.tokens[:, 0]].float().view(5, 7)
    assert torch.equal(r, expected)
    assert torch.allclose(task.success_probability(policy, prompts.index), task.initial_p[prompts.index], atol=1e-6)


def test_sample_prompts_is_seeded_and_distinct():
    a = BanditTask(BanditParams(), seed=7)
    b = BanditTask(BanditParams(), seed=7)
    ids_a, ids_b = a.sample_prompts(64).index, b.sample_prompts(64).index
    assert torch.equal(ids_a, ids_b) and len(set(ids_a.tolist())) == 64


@pytest.mark.parametrize(
    "cfg, field",
    [
        ({"num_answers": 1}, "env.num_answers"),
        ({"correct_answers": 16}, "env.correct_answers"),
        ({"p_range": [0.0, 0.5]}, "env.p_range"),
        ({"difficulty": "gauss"}, "env.difficulty"),
        ({"beta": [1.0, -1.0]}, "env.beta"),
    ],
)
def test_invalid_bandit_params(cfg, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        build_params(BanditParams, cfg, "env")
