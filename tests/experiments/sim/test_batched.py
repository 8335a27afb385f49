"""The batched simulator: R runs at once give the numbers of R single runs.

With ``draws="trainer"`` the batched run takes each single run's own random draws, so its
history and final logits must equal those of the single-run Trainer (to 1e-6 relative;
reductions are bitwise-identical with one torch thread, see the fixture).
"""

import math
import tempfile
from pathlib import Path

import pytest
import torch

from experiments.sim import BatchedSimulator, NotBatchable, plan, run_sweep
from experiments.training.build import build_trainer
from experiments.sim.draws import RunDraws
from experiments.sim.sweep import RunSpec

STEPS = 30
NO_DYNAMIC_SAMPLING = ("algo.filter.name=none", "~algo.filter.max_extra_rounds")


@pytest.fixture(autouse=True)
def one_thread():
    """Batched and single runs reduce in the same order only with one intra-op thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def configs(make_cfg, runs, seeds=(0, 1), steps=STEPS, prompts=16, bank=64):
    out = []
    for overrides in runs:
        for seed in seeds:
            env = "env.num_problems" if "env=arithmetic" in overrides else "env.num_prompts"
            out.append(make_cfg(*overrides, f"seed={seed}", f"train.steps={steps}", "train.progress=false",
                                f"train.prompts_per_step={prompts}", f"{env}={bank}"))
    return out


def single_run(cfg):
    trainer = build_trainer(cfg, Path(tempfile.mkdtemp()))
    while trainer.step < trainer.params.steps:
        trainer.train_step()
    return trainer


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= rel * max(1.0, abs(b))


def assert_same_as_single_runs(cfgs, **kwargs):
    sim = BatchedSimulator(cfgs, draws="trainer", **kwargs)
    histories = sim.run()
    for i, cfg in enumerate(cfgs):
        trainer = single_run(cfg)
        batched = histories[i].as_dicts()
        assert len(batched) == len(trainer.history) == cfg["train"]["steps"]
        for step, (mine, theirs) in enumerate(zip(batched, trainer.history), start=1):
            assert list(mine) == list(theirs), f"run {i} step {step}: tags differ"
            bad = {k: (mine[k], theirs[k]) for k in theirs if not close(mine[k], theirs[k])}
            assert not bad, f"run {i} step {step}: {bad}"
        want = trainer.policy.logit_table().detach()
        assert torch.allclose(sim.logits[i].detach(), want, rtol=1e-6, atol=1e-6), f"run {i}: final logits differ"
    return histories


CASES = {
    "grpo": [["algo=grpo"]],
    "grpo_hadw": [["algo=grpo_hadw"]],
    # DAPO's stages (clip-higher, token_mean, overlong shaping) without dynamic sampling
    "dapo_stages": [["algo=dapo", *NO_DYNAMIC_SAMPLING], ["algo=dapo_hadw", *NO_DYNAMIC_SAMPLING]],
    # per-run learning rates and reweighter hyperparameters in one batch (several algorithm groups)
    "lr_lambda_sweep": [["algo=grpo_hadw", "reweight.lambda_scale=1.0", "optim.lr=0.01"],
                        ["algo=grpo_hadw", "reweight.lambda_scale=1.5", "optim.lr=0.05"],
                        ["algo=grpo", "reweight=hadw_fixed", "reweight.anchor=0.4"],
                        ["algo=grpo", "reweight=hadw_window", "optim.lr=0.02"],
                        ["algo=grpo_focal", "optim.lr=0.03"], ["algo=grpo_agrae"]],
    # off-policy epochs and minibatches, KL to the reference, clipping
    "off_policy": [["algo=cispo_hadw", "train.ppo_epochs=2", "train.minibatches=4"],
                   ["algo=gspo", "train.ppo_epochs=2", "train.minibatches=4", "algo.kl.beta=0.1", "optim.max_grad_norm=0.05"]],
    "sgd": [["algo=dr_grpo", "optim.name=sgd", "optim.lr=2.0", "optim.max_grad_norm=0.5"],
            ["algo=grpo_hadw", "optim.name=sgd", "optim.lr=1.0", "optim.weight_decay=0.01"]],
    "adamw": [["algo=grpo_hadw", "optim.name=adamw", "optim.weight_decay=0.1", "optim.lr=0.02"]],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_batched_equals_single_runs(make_cfg, case):
    assert_same_as_single_runs(configs(make_cfg, CASES[case]))


def test_batched_equals_single_runs_on_verifier_scored_arithmetic(make_cfg):
    assert_same_as_single_runs(configs(make_cfg, [["env=arithmetic", "algo=grpo_hadw"]], steps=10, bank=32))


def test_per_prompt_gradient_matches_under_sgd(make_cfg):
    """The fast path (one log-softmax per prompt) changes only the rounding of the gradient:
    under SGD the runs still match. (Under Adam they do not: rounding-level gradients of
    unsampled answers become ~0.1 lr steps, so only the exact path can match Adam runs.)"""
    cfgs = configs(make_cfg, [["algo=grpo_hadw", "optim.name=sgd", "optim.lr=1.0"], ["algo=grpo", "optim.name=sgd", "optim.lr=3.0"]])
    assert_same_as_single_runs(cfgs, exact=False)


def test_dynamic_sampling_is_refused_and_runs_as_a_single_run(make_cfg):
    dapo = configs(make_cfg, [["algo=dapo"]], seeds=(0,), steps=8)[0]
    with pytest.raises(NotBatchable, match="dynamic sampling"):
        BatchedSimulator([dapo])
    grpo = configs(make_cfg, [["algo=grpo"]], seeds=(0,), steps=8)[0]
    jobs = plan([RunSpec("dapo", dapo), RunSpec("grpo", grpo)], workers=1)
    assert [(j.batched, [s.name for s in j.specs]) for j in jobs] == [(True, ["grpo"]), (False, ["dapo"])]
    result = run_sweep([RunSpec("dapo", dapo)], workers=1)
    assert result.runs[0].history.as_dicts() == single_run(dapo).history


@pytest.mark.parametrize("section, key, value", [("train", "group_size", 4), ("env", "num_prompts", 128),
                                                ("optim", "name", "sgd"), ("policy", "init", "uniform")])
def test_runs_that_differ_in_shape_are_refused_naming_the_field(make_cfg, section, key, value):
    base, other = configs(make_cfg, [["algo=grpo"]])
    other[section][key] = value
    with pytest.raises(NotBatchable, match=rf"run 1 differs from run 0 in {section}\.{key}"):
        BatchedSimulator([base, other])


def test_a_runs_results_do_not_depend_on_its_batch(make_cfg):
    """With the default draws each run has its own generator: alone or in a batch of three,
    and whatever its neighbours' algorithms, it gives the same numbers."""
    cfgs = configs(make_cfg, [["algo=grpo_hadw"], ["algo=grpo"]], seeds=(3, 4), steps=15)
    together = BatchedSimulator(cfgs).run()
    alone = BatchedSimulator([cfgs[1]]).run()[0]
    assert all(close(a, b) for ra, rb in zip(together[1].as_dicts(), alone.as_dicts()) for a, b in zip(ra.values(), rb.values()))
    # same seed, different algorithm: the first step's prompts and answers are the same draws
    assert together[0].column("accuracy/batch")[0] == together[2].column("accuracy/batch")[0]


def test_run_draws_follow_the_policy():
    """Answers drawn by inverse CDF match the probabilities (zero-probability answers never
    drawn); prompts are distinct within a step and uniform over the bank."""
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(2, 3, 6) * 2, -1)
    probs[0, 0, 2] = 0.0
    probs = probs / probs.sum(-1, keepdim=True)
    draws = RunDraws([0, 1], num_prompts=10, prompts_per_step=4, shuffle=False)
    n = 40000
    answers = draws.answers(probs, n)  # (2, 3, n)
    freq = torch.nn.functional.one_hot(answers, 6).float().mean(2)  # (2, 3, 6)
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= 5 * se + 1e-9).all()
    assert freq[0, 0, 2] == 0.0
    counts = torch.zeros(2, 10)
    for _ in range(2000):
        ids = draws.prompts()  # (2, 4)
        assert all(len(set(row.tolist())) == 4 for row in ids)
        counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float))
    expected = 2000 * 4 / 10
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all()
    assert RunDraws([0], 10, 10, shuffle=False).prompts() is None  # P = N: every prompt


def test_truncated_is_without_a_separate_sampler_is_refused_before_anything_is_written(make_cfg, tmp_path):
    """One training step: batched runs call Algorithm.objective itself, so a stage the tabular
    policy cannot feed (truncated IS needs a separate engine's log-probs) is refused when the
    runs are built, for a single run and a batch alike, before any directory exists."""
    from algorithms import ConfigError
    from tests.conftest import run_cli

    cfg = make_cfg("algo.tis.cap=2.0", "train.steps=2")
    for build in (lambda: build_trainer(cfg, tmp_path / "single"), lambda: BatchedSimulator([cfg, cfg])):
        with pytest.raises(ConfigError, match="algo.tis.cap: truncated importance sampling corrects the samples of a "
                                              "separate generation engine"):
            build()
    out = run_cli("algo.tis.cap=2.0", f"train.log_dir={tmp_path / 'runs'}")
    assert out.returncode == 2 and out.stderr.startswith("error: algo.tis.cap:") and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()
