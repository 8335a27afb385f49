"""The run: config validation, determinism, resume, the Theorem-1 signature in training."""

import math

import pytest
import torch

from algorithms import ConfigError
from experiments.training.checkpoint import list_checkpoints, load_latest
from experiments.training.build import build_trainer
from experiments.training.guards import NonFiniteRewardError


def small(cfg, steps=20):
    cfg["train"].update(steps=steps, prompts_per_step=16, checkpoint_every=10, progress=False)
    cfg["env"].update(num_prompts=64)
    return cfg


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["train.group_size=1"], "train.group_size"),
        (["train.steps=0"], "train.steps"),
        (["reweight.lambda_scale=0"], "reweight.lambda_scale"),
        (["reweight.lambda_scale=-1"], "reweight.lambda_scale"),
        (["algo.advantage.eps=-1e-6"], "algo.advantage.eps"),
        (["algo.loss.eps_high=-0.1"], "algo.loss.eps_high"),
        (["algo.loss.name=nope"], "algo.loss.name"),
        (["optim.lr=0"], "optim.lr"),
        (["seed=1.5"], "seed"),
        (["train.prompts_per_step=1000"], "train.prompts_per_step"),
    ],
)
def test_invalid_config_is_refused_naming_the_field(make_cfg, tmp_path, overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        build_trainer(make_cfg(*overrides), tmp_path)


def test_same_seed_same_numbers(make_cfg, tmp_path):
    a = build_trainer(small(make_cfg()), tmp_path / "a")
    b = build_trainer(small(make_cfg()), tmp_path / "b")
    c = build_trainer(small(make_cfg("seed=1")), tmp_path / "c")
    ha, hb, hc = a.train(), b.train(), c.train()
    assert ha == hb
    assert torch.equal(a.policy.logits, b.policy.logits)
    assert ha != hc


def test_resume_is_bit_identical(make_cfg, tmp_path):
    full = build_trainer(small(make_cfg()), tmp_path / "full")
    full.train()

    part = build_trainer(small(make_cfg()), tmp_path / "part")
    part.train()
    ckpts = list_checkpoints(tmp_path / "part")
    assert [p.name for p in ckpts] == ["step_000010.pt", "step_000020.pt"]
    ckpts[-1].unlink()  # the run "died" after step 10
    (tmp_path / "part" / "checkpoints" / "step_000015.pt").write_bytes(b"truncated")  # and a torn write

    with pytest.warns(UserWarning, match=r"skipping checkpoint .*step_000015.pt: unreadable"):
        path, state = load_latest(tmp_path / "part")
    assert path.name == "step_000010.pt"
    resumed = build_trainer(small(make_cfg()), tmp_path / "part")
    resumed.load_state_dict(state)
    assert resumed.step == 10
    resumed.train()
    assert resumed.history == full.history
    assert torch.equal(resumed.policy.logits, full.policy.logits)
    assert torch.equal(resumed.algo.reweighter.prior, full.algo.reweighter.prior)


def test_non_finite_reward_is_refused(make_cfg, tmp_path):
    trainer = build_trainer(small(make_cfg()), tmp_path)
    original = trainer.task.rewards

    def poisoned(prompts, rollout):
        r = original(prompts, rollout)
        r[2, 1] = math.nan
        return r

    trainer.task.rewards = poisoned
    with pytest.raises(NonFiniteRewardError, match=r"step 1: 1 non-finite reward\(s\) at \[prompt, response\] \[\[2, 1\]\]"):
        trainer.train_step()


def test_grpo_bias_has_theorem_1_signs_in_training(make_cfg, tmp_path):
    """On the default bandit, E[A_hat - A | S] < 0 for hard prompts and > 0 for easy ones."""
    cfg = make_cfg("algo=grpo")
    cfg["train"]["progress"] = False
    history = build_trainer(cfg, tmp_path).train()
    mean = lambda key: sum(v for h in history if math.isfinite(v := h[key])) / len(history)  # noqa: E731
    assert mean("bias/hard") < -0.005
    assert mean("bias/easy") > 0.02
    assert history[-1]["accuracy/all"] > history[0]["accuracy/all"] + 0.1  # it learns
    # F-GRPO's observation: the rare correct mode loses share of the correct mass as p grows
    assert history[-1]["modes/rare_share"] < 0.9 * history[0]["modes/rare_share"]
