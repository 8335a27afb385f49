"""Subprocess runs of ``python -m experiments.run``: smoke, TensorBoard events, errors, resume."""

import re
import shutil

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import run_cli

REQUIRED_TAGS = {
    "accuracy/all", "accuracy/hard", "accuracy/medium", "accuracy/easy",
    "accuracy/batch", "accuracy/batch_hard", "accuracy/batch_medium", "accuracy/batch_easy",
    "reward/mean", "groups/degenerate_frac", "hadw/belief", "hadw/eta",
    "phi/correct", "phi/incorrect", "bias/hard", "bias/medium", "bias/easy",
}


def scalars(run_dir):
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def only_run(log_dir):
    runs = [p for p in log_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_default_run_writes_events_config_and_summary(tmp_path):
    out = run_cli("train.steps=30", f"train.log_dir={tmp_path}", "train.checkpoint_every=10")
    assert out.returncode == 0, out.stderr
    assert "grpo_hadw on bandit: 30 steps" in out.stdout
    assert re.search(r"A_hat - A, hard .*-?\d\.\d{4}", out.stdout)
    run_dir = only_run(tmp_path)
    assert (run_dir / "config.yaml").is_file()
    tags = scalars(run_dir)
    assert REQUIRED_TAGS <= set(tags), REQUIRED_TAGS - set(tags)
    assert [s for s, _ in tags["reward/mean"]] == list(range(1, 31))
    assert all(0.0 <= v <= 1.0 for _, v in tags["accuracy/all"])


def test_unknown_algo_lists_the_valid_ones(tmp_path):
    out = run_cli("algo=nope", f"train.log_dir={tmp_path}")
    assert out.returncode != 0
    assert "Could not find 'algo/nope'" in out.stderr and "grpo_hadw" in out.stderr
    assert not any(tmp_path.iterdir())


def test_bad_hyperparameter_fails_at_start(tmp_path):
    out = run_cli("reweight.lambda_scale=-1", f"train.log_dir={tmp_path}")
    assert out.returncode == 2
    assert "reweight.lambda_scale: must be > 0.0, got -1" in out.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_resume_continues_to_the_same_numbers(tmp_path):
    common = ["algo=grpo", "train.steps=20", "train.checkpoint_every=10", "train.progress=false"]
    full = run_cli(*common, f"train.log_dir={tmp_path / 'a'}", "train.run_name=full")
    part = run_cli(*common, f"train.log_dir={tmp_path / 'b'}", "train.run_name=part")
    assert full.returncode == 0 and part.returncode == 0, full.stderr + part.stderr
    run_dir = tmp_path / "b" / "part"
    (run_dir / "checkpoints" / "step_000020.pt").unlink()

    refused = run_cli(f"resume={run_dir}", "algo=grpo_hadw")
    assert refused.returncode == 2 and "cannot change algo=grpo_hadw" in refused.stderr

    resumed = run_cli(f"resume={run_dir}", "train.progress=false")
    assert resumed.returncode == 0, resumed.stderr
    assert "from step_000010.pt (step 10)" in resumed.stderr
    table = lambda text: text[text.index("metric"):text.index("run directory")]  # noqa: E731
    assert table(resumed.stdout) == table(full.stdout)
    a, b = scalars(tmp_path / "a" / "full"), scalars(run_dir)
    assert a["accuracy/all"] == b["accuracy/all"]  # steps 11-20 purged and rewritten identically
