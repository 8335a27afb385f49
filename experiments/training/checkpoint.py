"""Checkpoints and the export, written so that a kill at any moment loses nothing good.

Layout: ``<run_dir>/checkpoints/step_000050.pt`` and its ``step_000050.pt.sha256``. A checkpoint
is written to a temporary file, fsynced, its SHA-256 written beside it, then renamed into
place; older checkpoints beyond ``keep`` are pruned only after the new one is on disk. At load
a checkpoint whose bytes do not match their checksum (a flipped byte that still unpickles),
or that does not load, is skipped with a warning naming why, and the previous one is tried.
A failed write (disk full) removes its temporary files and raises the OSError.

The export is written with ``policies.files.atomic_folder`` (a temporary folder renamed into place).
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Iterator
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


def checksum_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class HashingWriter:
    """A write-only file that feeds every byte written through it to ``digest`` (the checkpoint
    is hashed as torch.save streams it, not read back)."""

    def __init__(self, f, digest):
        self.f, self.digest = f, digest

    def write(self, data) -> int:
        self.digest.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _write_synced(path: Path, write, name: Path) -> None:
    """``write(f)`` into ``path``, flushed to the disk. A failed write is an OSError naming
    ``name`` (torch.save reports a failed file write, e.g. disk full, as a RuntimeError)."""
    try:
        with open(path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(name)) from exc
    except RuntimeError as exc:
        if isinstance(exc.__context__, OSError):
            raise OSError(exc.__context__.errno, exc.__context__.strerror, str(name)) from exc
        raise


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: int) -> Path:
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:06d}.pt"
    tmp, tmp_sum = folder / f".{path.name}.tmp", folder / f".{path.name}.sha256.tmp"
    try:
        digest = hashlib.sha256()
        _write_synced(tmp, lambda f: torch.save(state, HashingWriter(f, digest)), path)  # hashed as written
        _write_synced(tmp_sum, lambda f: f.write(digest.hexdigest().encode()), checksum_file(path))
        os.replace(tmp_sum, checksum_file(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        tmp_sum.unlink(missing_ok=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
        checksum_file(old).unlink(missing_ok=True)
    return path


def read_checkpoint(path: Path) -> dict:
    """The state in ``path``; ValueError where its bytes do not match the checksum beside it
    (a checkpoint written before checksums existed is read without one)."""
    recorded = checksum_file(path)
    if recorded.is_file() and recorded.read_text().strip() != sha256(path):
        raise ValueError("damaged: its bytes do not match the SHA-256 written with it")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - truncated by a kill, not a checkpoint: whatever torch.load raises
        raise ValueError(f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc


def readable_checkpoints(run_dir: Path) -> Iterator[tuple[Path, dict]]:
    """(path, state) of the run's checkpoints, newest first, skipping (with a warning naming why)
    those that do not verify or do not load."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            state = read_checkpoint(path)
        except ValueError as exc:
            warnings.warn(f"skipping checkpoint {path}: {exc}", stacklevel=2)
            continue
        yield path, state


def load_latest(run_dir: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that verifies and loads."""
    return next(readable_checkpoints(run_dir), None)
