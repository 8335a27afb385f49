"""Where the benchmark files are looked for: beside the project's checkout, whatever the current
directory; the folder ignored by git where evaluations land."""

import os
import subprocess
import sys

import pytest

from rlvr_env.datasets import CHECKOUT, default_data_dir
from tests.conftest import ROOT


def test_the_default_data_folder_is_beside_the_checkout_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("RLVR_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert CHECKOUT == ROOT and default_data_dir() == ROOT.parent / "shared" / "data"
    monkeypatch.setenv("RLVR_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path


@pytest.mark.slow
def test_a_missing_file_names_the_checkouts_data_folder_from_another_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RLVR_DATA_DIR"}
    out = subprocess.run([sys.executable, "-m", "experiments.run", "policy=hf", "policy.model_path=/nonexistent",
                          "policy.max_new_tokens=8", "env=jsonl", "env.path=nope.jsonl", f"train.log_dir={tmp_path / 'runs'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**env, "PYTHONPATH": str(ROOT)})
    data = ROOT.parent / "shared" / "data"
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"error: env.path: no such file {data / 'nope.jsonl'} (data folder {data.resolve()}: env.data_dir, else the "
        "RLVR_DATA_DIR environment variable, else ../shared/data beside the project checkout); point one of them at "
        "the folder holding the benchmark JSONL files, or give an absolute path (a .jsonl or .parquet file, or a datasets "
        "folder)"]
    assert not (tmp_path / "runs").exists()


def test_evaluations_written_under_evals_are_ignored_by_git():
    """``python -m experiments.evaluate`` without ``run=`` writes ``evals/<policy>-<label>-<time>/``."""
    done = subprocess.run(["git", "check-ignore", "-q", "evals/tiny-qwen3-math500-20261204-120000/eval.json"], cwd=ROOT)
    if done.returncode == 128:
        pytest.skip("not a git checkout")
    assert done.returncode == 0
