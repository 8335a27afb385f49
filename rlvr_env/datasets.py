"""The benchmark datasets, declared once: their files, their held-out splits, where they live.

    BENCHMARKS["math500"] -> Benchmark(name, path="math500.jsonl", heldout=100)
    default_data_dir() -> Path    RLVR_DATA_DIR, else ../shared/data beside the project checkout

``env=NAME`` (training; ``experiments/evaluation/benchmarks.py`` registers the presets) and
``python -m experiments.evaluate benchmark=NAME`` (its ``eval_path``) read this table.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

CHECKOUT = Path(__file__).resolve().parents[1]
"""The project's checkout (the folder holding rlvr_env/)."""


def default_data_dir() -> Path:
    """Where the benchmark files are: ``RLVR_DATA_DIR``, else ``../shared/data`` beside the
    checkout (not beside the current directory)."""
    return Path(os.environ.get("RLVR_DATA_DIR") or CHECKOUT.parent / "shared" / "data")


@attrs.frozen
class Benchmark:
    name: str
    """``env=NAME`` and ``benchmark=NAME``."""
    path: str
    """The file trained on, in the data folder."""
    heldout: int | float = 0.1
    """Problems of ``path`` kept out of training: a count, or a fraction in [0, 1)."""
    heldout_path: str | None = None
    """A separate held-out file instead (GSM8K's test split)."""

    @property
    def eval_path(self) -> str:
        """What ``experiments.evaluate benchmark=NAME`` reads: the held-out file, else the file."""
        return self.heldout_path or self.path


BENCHMARKS = {b.name: b for b in [
    Benchmark("math500", "math500.jsonl", heldout=100),
    Benchmark("gsm8k", "gsm8k_train.jsonl", heldout_path="gsm8k_test.jsonl"),
    Benchmark("aime24", "aime24.jsonl", heldout=0),
    Benchmark("aime25", "aime25.jsonl", heldout=0),
    Benchmark("amc2023", "amc2023.jsonl", heldout=0),
    Benchmark("minervamath", "minervamath.jsonl", heldout=50),
    Benchmark("olympiadbench", "olympiadbench.jsonl", heldout=100),
]}
