"""policy=loglinear through ``python -m experiments.run`` as a user runs it: sharing 0 prints and
records the tabular run's numbers, sharing 0.5 trains, a bad sharing is one error line."""

import pytest
import torch

from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # subprocess runs: python -m pytest -m 'not slow' skips them

STEPS = 50


def train(tmp_path, name: str, *overrides: str):
    """Run the CLI for STEPS steps; (summary table lines, the final checkpoint's history)."""
    out = run_cli(*overrides, "seed=2", f"train.steps={STEPS}", "train.progress=false",
                  f"train.log_dir={tmp_path}", f"train.run_name={name}")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    table = [line for line in lines[header:] if line and not line.startswith("run directory")]
    checkpoint = torch.load(tmp_path / name / "checkpoints" / f"step_{STEPS:06d}.pt", weights_only=False)
    return table, checkpoint["history"]


def test_sharing_zero_prints_and_records_the_tabular_numbers(tmp_path):
    tabular = train(tmp_path, "tabular", "policy=tabular")
    loglinear = train(tmp_path, "loglinear", "policy=loglinear", "policy.sharing=0")
    assert len(tabular[1]) == STEPS and len(tabular[0]) > 10
    assert loglinear[0] == tabular[0]  # the summary table, line for line
    assert loglinear[1] == tabular[1]  # every metric of every step


def test_a_run_with_half_sharing_trains(tmp_path):
    table, history = train(tmp_path, "half", "policy=loglinear", "policy.sharing=0.5")
    assert len(history) == STEPS and any(line.startswith("accuracy, exact") for line in table)
    assert "bias/all" in history[-1]  # exact p known: the true advantage bias is logged
    assert (tmp_path / "half" / "model" / "table.pt").is_file()


def test_a_sharing_outside_zero_one_is_one_error_line(tmp_path):
    out = run_cli("policy=loglinear", "policy.sharing=1.5", "train.steps=1", f"train.log_dir={tmp_path / 'runs'}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == ["error: policy.sharing: must be in [0.0, 1.0], got 1.5"]
    assert not (tmp_path / "runs").exists()  # nothing written
