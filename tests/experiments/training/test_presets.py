"""Every algorithm preset runs; DAPO's filter and shaping; the KL penalty."""

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms import FILTERS, SHAPERS
from experiments.training.build import build_trainer
from tests.conftest import run_cli

PRESETS = ["grpo", "dr_grpo", "gspo", "dapo", "cispo", "grpo_hadw", "dr_grpo_hadw", "gspo_hadw",
           "dapo_hadw", "cispo_hadw", "grpo_focal", "grpo_agrae"]


@pytest.mark.parametrize("algo", PRESETS)
def test_every_preset_trains_50_steps(make_cfg, tmp_path, algo):
    cfg = make_cfg(f"algo={algo}", "train.steps=50", "train.progress=false", "train.minibatches=2", "train.ppo_epochs=2")
    history = build_trainer(cfg, tmp_path).train()
    assert len(history) == 50
    last = history[-1]
    assert all(np.isfinite(v) for k, v in last.items() if not k.startswith(("bias/", "accuracy/batch_", "phi/")))
    assert last["accuracy/all"] > history[0]["accuracy/all"]


@pytest.mark.slow
def test_cli_cispo_with_focal(tmp_path):
    out = run_cli("algo=cispo", "reweight=focal", "train.steps=50", f"train.log_dir={tmp_path}", "train.progress=false")
    assert out.returncode == 0, out.stderr
    assert "cispo_focal on bandit: 50 steps" in out.stdout


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(2, 8)), elements=st.sampled_from([0.0, 0.5, 1.0])))
def test_dynamic_sampling_keeps_exactly_the_varied_groups(rewards):
    r = torch.as_tensor(rewards)
    keep = FILTERS.build({"name": "dynamic_sampling"}).keep(r)
    assert torch.equal(keep, r.std(dim=1) > 0)


def test_dynamic_sampling_never_trains_on_a_zero_variance_group(make_cfg, tmp_path):
    # Mostly easy prompts: many all-correct groups to drop.
    cfg = make_cfg("algo=dapo", "train.steps=15", "train.progress=false", "env.difficulty=beta", "env.beta=[4.0,1.0]",
                   "train.prompts_per_step=32", "algo.filter.max_extra_rounds=2")
    trainer = build_trainer(cfg, tmp_path)
    saw_resample = False
    for _ in range(15):
        groups, _, _ = trainer.collect()
        trained = groups.rewards[groups.train]
        assert (trained.std(dim=1) > 0).all()
        assert int(groups.train.sum()) <= 32
        rounds = int(groups.stats["sampling/rounds"])
        saw_resample |= rounds > 1
        if int(groups.train.sum()) < 32:  # a short batch only once the budget is spent
            assert rounds == 3
        trainer.train_step()
    assert saw_resample
    logged = trainer.history[-1]
    assert logged["sampling/dropped_groups"] >= 0 and 1 <= logged["sampling/rounds"] <= 3


def test_overlong_shaping_by_hand():
    shape = SHAPERS.build({"name": "overlong", "max_length": 100, "buffer_fraction": 0.2, "penalty": 1.0})
    r = torch.ones(1, 5)
    lengths = torch.tensor([[50, 80, 90, 100, 130]])
    assert shape(r, lengths)[0].tolist() == pytest.approx([1.0, 1.0, 0.5, 0.0, 0.0])
    assert torch.equal(shape(r, torch.ones(1, 5)), r)  # tabular: length 1, a no-op


def test_kl_penalty_pulls_towards_the_reference(make_cfg, tmp_path):
    base = ["algo=grpo", "train.steps=40", "train.progress=false", "optim.lr=0.05"]
    free = build_trainer(make_cfg(*base), tmp_path / "a")
    tied = build_trainer(make_cfg(*base, "algo.kl.beta=1.0"), tmp_path / "b")
    free.train(), tied.train()

    def exact_kl(t):  # KL(pi || pi_ref), averaged over prompts
        p, q = torch.softmax(t.policy.logits.detach(), -1), torch.softmax(t.policy.ref_logits, -1)
        return (p * (p.log() - q.log())).sum(-1).mean().item()

    assert tied.history[-1]["loss/kl_ref"] > 0
    assert exact_kl(tied) < 0.9 * exact_kl(free)
