"""Atomic checkpoints: write to a temporary file, fsync, rename. Never lose the last good one.

Layout: ``<run_dir>/checkpoints/step_000050.pt``. Older checkpoints beyond ``keep`` are
pruned only after the new one is safely on disk.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch

PATTERN = re.compile(r"step_(\d+)\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: int) -> Path:
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:06d}.pt"
    tmp = folder / f".{path.name}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest(run_dir: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads; a corrupt newer one is skipped with a warning."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a truncated file from a killed process
            warnings.warn(f"skipping unreadable checkpoint {path}: {exc}", stacklevel=2)
    return None
