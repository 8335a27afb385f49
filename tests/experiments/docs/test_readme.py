"""The README shows what the program does: sample outputs regenerate, snippets run as pasted."""

import re
import subprocess
import sys

import pytest

from experiments.docs import readme
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # subprocess runs and multi-process jobs: python -m pytest -m 'not slow' skips them

SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_samples_match_fresh_output():
    """Fails when a sample block drifts from what its command prints now
    (fix: python -m experiments.docs.readme write=true)."""
    done = subprocess.run([sys.executable, "-m", "experiments.docs.readme"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert done.stderr.count("ok ") >= 6


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_python_snippets_run_as_pasted(code, tmp_path):
    script = tmp_path / "snippet.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]


def test_drift_detection_masks_only_what_varies():
    sample = readme.Sample("cmd", {}, 0, 0, "$ cmd\ngrpo: 200 steps, 1.1 s\nacc 0.5353\nrun: runs/x-20261122-031359")
    assert not readme.drifted(sample, "$ cmd\ngrpo: 200 steps, 48.6 s\nacc 0.5353\nrun: runs/x-20261122-090000")
    assert readme.drifted(sample, "$ cmd\ngrpo: 200 steps, 1.1 s\nacc 0.5354\nrun: runs/x-20261122-031359")
    numbers = readme.Sample("cmd", {"numbers": ""}, 0, 0, "$ cmd\nratio 1.8x")
    assert not readme.drifted(numbers, "$ cmd\nratio 2.3x") and readme.drifted(numbers, "$ cmd\nspeed 2.3x")


def test_build_algorithm_accepts_lists_and_refuses_junk_by_name():
    import numpy as np
    import torch

    from algorithms import build_algorithm
    algo = build_algorithm({"name": "g", "advantage": {"name": "group_norm"}, "loss": {"name": "ppo_clip"},
                            "aggregation": {"name": "token_mean"}})
    expected = algo.advantage(torch.tensor([[1.0, 0.0]]))
    assert torch.equal(algo.advantage([[1, 0]]), expected) and torch.equal(algo.advantage(np.array([[1.0, 0.0]])), expected)
    with pytest.raises(ValueError, match=r"shape \[P, G\]"):
        algo.advantage([1.0, 0.0])
    with pytest.raises(TypeError, match="rewards must be a torch tensor"):
        algo.advantage([["a", "b"]])
