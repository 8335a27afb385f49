"""Folders written whole: a reader (``from_pretrained``, a resume) never finds half of one.

    with atomic_folder(path) as tmp:      # fill tmp; on success it is renamed to path
        model.save_pretrained(tmp)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a new temporary sibling folder (``.NAME.XXXXXX``) to fill; on success it is
    renamed to ``path``. ``replace``: an existing ``path`` is replaced (moved aside, then
    removed); else where ``path`` exists by then (another process finished first) theirs is
    kept and ours removed. On failure (disk full, Ctrl-C) the temporary folder is removed; a
    kill leaves it, and ``stale_temporaries`` finds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if replace and path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
            return
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def stale_temporaries(path: str | Path) -> list[Path]:
    """The temporary folders ``atomic_folder(path)`` left behind when killed (remove them only
    where no other process can be writing one)."""
    path = Path(path)
    return sorted(p for p in path.parent.glob(f".{path.name}.*") if p.is_dir())
