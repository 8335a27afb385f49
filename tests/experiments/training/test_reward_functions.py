"""Reward functions in training (env.rewards, README "Your own reward function"): unscorable
responses get advantage 0 outside their group's baseline, reward/<name> is logged, and the
program stops in one line on a failing function, run as a user runs it."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from algorithms import build_algorithm
from experiments.training.build import build_trainer, compose_config
from experiments.training.checkpoint import list_checkpoints, read_checkpoint
from experiments.training.groups import fill_unscorable, scorable_advantage
from experiments.training.guards import RewardFunctionStopped
from tests.conftest import ROOT

# Deterministic functions of the tabular policy's completions (candidate answer strings).
MODULE = '''
import json, os

def parity(prompts, completions, **kwargs):
    """None for answers ending in 7 (unscorable), else 1 for even answers."""
    out = [None if c.endswith("7") else float(int(c) % 2 == 0) for c in completions]
    log = os.environ.get("REWARD_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(out) + "\\n")
    return out

def length(prompts, completions, answer):
    return [float(len(c)) for c in completions]

calls = []

def flaky(prompts, completions, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        raise RuntimeError("no score service")
    return [0.0] * len(completions)
'''
TABULAR = ["env=arithmetic", "algo=grpo", "train.prompts_per_step=8", "train.group_size=4", "train.progress=false"]


@pytest.fixture
def reward_dir(tmp_path, monkeypatch):
    (tmp_path / "step_rewards.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("step_rewards", None)


def test_scorable_advantage_uses_the_scored_responses_alone():
    advantage = build_algorithm(compose_config("algo=grpo")["algo"]).advantage
    rewards = torch.tensor([[1.0, 0.0, 0.5, 0.0], [1.0, 0.0, 1.0, 0.0], [3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    scored = torch.tensor([[True, True, True, False], [True, True, True, True], [True, False, False, False],
                           [False, False, False, False]])
    out = scorable_advantage(advantage, rewards, scored)
    assert torch.equal(out[0, :3], advantage(rewards[:1, :3])[0]) and out[0, 3] == 0  # baseline of 3, not 4
    assert torch.equal(out[1], advantage(rewards[1:2])[0])  # all scored: the stage's own numbers
    assert out[2:].eq(0).all()  # one scored: no baseline; none scored: 0
    filled = fill_unscorable(rewards, scored)
    assert filled[0].tolist() == [1.0, 0.0, 0.5, 0.5] and filled[2].tolist() == [3.0] * 4
    assert filled[3].tolist() == [0.8125] * 4  # none scored: the step's scored mean, 6.5 / 8


def traced(tmp_path, *overrides):
    """A tabular trainer whose scored rollouts (``seen``) and trained rollouts (``trained``) are kept."""
    trainer = build_trainer(compose_config(*TABULAR, *overrides), tmp_path / "run")
    seen, trained = [], []
    score, update = trainer.task.reward_scores, trainer.update
    trainer.task.reward_scores = lambda prompts, rollout: seen.append(rollout) or score(prompts, rollout)
    trainer.update = lambda rollout, num_groups=None: trained.append(rollout) or update(rollout, num_groups)
    return trainer, seen, trained


def test_unscorable_responses_train_with_advantage_zero(reward_dir, tmp_path):
    trainer, seen, trained = traced(tmp_path, "env.rewards=[verifier,step_rewards:parity]", "env.reward_weights=[1.0,2.0]")
    for _ in range(3):
        values = trainer.train_step()
        texts = seen[-1].texts
        parity = torch.tensor([math.nan if t.endswith("7") else float(int(t) % 2 == 0) for t in texts])
        correct = torch.tensor([float(t == trainer.task.problems[i].answer)
                                for i, t in zip(seen[-1].prompt_index.tolist(), texts)])
        total = correct + 2.0 * torch.nan_to_num(parity)  # the verifier scores every response: none unscorable
        scored = ~torch.isnan(parity)
        assert values["reward/parity"] == pytest.approx(parity[scored].mean().item())
        assert values["reward/verifier"] == pytest.approx(correct.mean().item())
        assert values["reward/mean"] == pytest.approx(total.mean().item())
        assert values["reward/unscorable_frac"] == 0.0
        expected = trainer.algo.advantage(total.view(8, 4)).reshape(-1)
        assert torch.allclose(trained[-1].advantages, expected)  # HA-DW off (algo=grpo): A' = A
    assert trainer.history[-1]["reward/parity"] == values["reward/parity"]


def test_none_from_every_function_gives_advantage_zero_outside_the_baseline(reward_dir, tmp_path):
    trainer, seen, trained = traced(tmp_path, "env.rewards=[step_rewards:parity]", "reweight=hadw")
    found = 0
    for _ in range(4):
        values = trainer.train_step()
        parity = torch.tensor([math.nan if t.endswith("7") else float(int(t) % 2 == 0) for t in seen[-1].texts])
        unscorable = torch.isnan(parity)
        found += int(unscorable.sum())
        assert values["reward/unscorable_frac"] == pytest.approx(unscorable.float().mean().item())
        assert values["reward/mean"] == pytest.approx(parity[~unscorable].mean().item())
        advantages = trained[-1].advantages
        assert advantages[unscorable].eq(0).all() and torch.isfinite(advantages).all()
        for g, r in enumerate(parity.view(8, 4)):  # each group against its scored responses alone
            keep = ~torch.isnan(r)
            if keep.sum() >= 2:
                a = trainer.algo.advantage(r[keep][None])[0]
                ratio = advantages.view(8, 4)[g][keep][a != 0] / a[a != 0]  # HA-DW: one positive factor per sign
                assert (ratio > 0).all()
                assert torch.equal(advantages.view(8, 4)[g][keep] == 0, a == 0)
    assert found > 0  # the test saw unscorable responses
    assert all(math.isfinite(trainer.history[-1][k]) for k in ("hadw/belief", "loss/value", "loss/grad_norm", "reward/mean"))


def test_a_failing_function_stops_the_step_with_its_name(reward_dir, tmp_path):
    cfg = compose_config(*TABULAR, "env.rewards=[verifier,step_rewards:flaky]")
    trainer = build_trainer(cfg, tmp_path / "run")
    trainer.train_step()
    with pytest.raises(RewardFunctionStopped, match=r"^step 2: reward function flaky: raised RuntimeError: no score "
                                                      r"service \(row: arith-L\d-\d+ '.*', the first of 32 completions\)$"):
        trainer.train_step()


def test_a_nan_from_the_verifier_is_not_read_as_unscorable(tmp_path):
    trainer = build_trainer(compose_config(*TABULAR), tmp_path / "run")
    verdicts = trainer.task.rewards
    nan_at = (torch.tensor([2]), torch.tensor([1]))  # group 2, response 1: completion 9 of G = 4
    trainer.task.rewards = lambda prompts, rollout: verdicts(prompts, rollout).index_put_(nan_at, torch.tensor(math.nan))
    with pytest.raises(RewardFunctionStopped, match=r"^step 1: reward function verifier: 1 non-finite reward\(s\), "
                                                      r"the first nan for completion 9 \(row: arith-"):
        trainer.train_step()


# ------------------------------------------------------------------ as a user runs it

def run(cwd, *args, log=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    if log is not None:
        env["REWARD_LOG"] = str(log)
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def history(run_dir) -> list[dict]:
    return read_checkpoint(list_checkpoints(run_dir)[-1])["history"]


@pytest.mark.slow
def test_reward_functions_from_the_command_line_are_logged(reward_dir):
    log = reward_dir / "returned.jsonl"
    done = run(reward_dir, *TABULAR, "train.steps=5", "train.run_name=mine", "env.rewards=[verifier,step_rewards:parity]",
               "env.reward_weights=[0.5,2]", log=log)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = history(reward_dir / "runs" / "mine")
    returned = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(steps) == len(returned) == 5
    for values, out in zip(steps, returned):  # what the function returned, step by step
        scored = [v for v in out if v is not None]
        assert values["reward/parity"] == pytest.approx(sum(scored) / len(scored), rel=1e-6)
        assert values["reward/mean"] == pytest.approx(
            0.5 * values["reward/verifier"] + 2 * sum(scored) / len(out), rel=1e-5)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(reward_dir / "runs" / "mine")).Reload()
    logged = [e.value for e in events.Scalars("reward/parity")]
    assert logged == pytest.approx([h["reward/parity"] for h in steps], rel=1e-6)


@pytest.mark.slow
def test_a_failing_reward_function_stops_the_run_in_one_line(reward_dir):
    done = run(reward_dir, *TABULAR, "train.steps=5", "train.run_name=flaky", "train.checkpoint_every=1",
               "env.rewards=[verifier,step_rewards:flaky]")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"error: step 2: reward function flaky: raised RuntimeError: no score service \(row: "
                        r"arith-L\d-\d+ '.*', the first of 32 completions\); kept: .*step_000001.pt .*", last), last
    bad = run(reward_dir, *TABULAR, "train.run_name=bad", "env.rewards=[verifier,step_rewards:missing]")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == (
        f"error: env.rewards[1]: module 'step_rewards' has no 'missing' ({reward_dir / 'step_rewards.py'})")
    assert not (reward_dir / "runs" / "bad").exists()


def readme_example() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Your own reward function"):]
    section = section[:section.index("\n## ", 1)]
    module = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()
    return module, command


@pytest.mark.slow
def test_readme_reward_example_runs_as_written(tmp_path):
    module, command = readme_example()
    assert module.startswith("# my_rewards.py") and command.startswith("python -m experiments.run")
    (tmp_path / "my_rewards.py").write_text(module)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command.replace("python ", f"{sys.executable} ", 1), shell=True, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = history(tmp_path / "runs" / "my-reward")
    assert len(steps) == 20
    for values in steps:  # total = 1.0 * verifier + 0.5 * short_answer; every completion scored
        assert values["reward/unscorable_frac"] == 0.0 and values["reward/short_answer"] <= 0
        assert values["reward/mean"] == pytest.approx(values["reward/verifier"] + 0.5 * values["reward/short_answer"],
                                                      rel=1e-5, abs=1e-6)


def test_the_batched_simulator_leaves_reward_functions_to_the_trainer():
    from experiments.sim import unbatchable_reason

    assert unbatchable_reason(compose_config(*TABULAR)) is None  # the verifier alone: batched, reward/verifier logged
    reason = unbatchable_reason(compose_config(*TABULAR, "env.rewards=[verifier,step_rewards:parity]"))
    assert reason.startswith("env.rewards=['verifier', 'step_rewards:parity']: the batched simulator scores with")
    assert unbatchable_reason(compose_config(*TABULAR, "env.reward_weights=[2.0]")) is not None
