import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def compose(*overrides: str) -> dict:
    """The run config Hydra composes for these command-line overrides, as a plain dict."""
    from experiments.training.build import compose_config

    return compose_config(*overrides)


def run_cli(*args: str, module: str = "experiments.run", timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(err: str) -> str:
    """The stderr of a refused run: exactly one ``error:`` line and no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def make_cfg():
    return compose
