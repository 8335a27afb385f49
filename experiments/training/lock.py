"""A run directory's lock: held by the process that writes the run, for the run's life.

    lock = RunLock(run_dir / "run.lock")   # RunLocked("... in use by pid 1234 on host ...") when held
    ...
    lock.release()

``fcntl.flock`` on a file that names its holder (PID and host). The kernel drops the lock
when its process ends, however it ends (kill -9 too), so a stale lock never blocks a resume.
Ours rather than ``filelock``'s: its flock lock records no holder, which the refusal names.
The file stays in place on release (deleting it would let two processes lock two inodes).
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path


class RunLocked(RuntimeError):
    """The run directory is locked by another live process."""


class RunLock:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by exec'd children
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 256).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(f"{self.path.parent} is in use by {holder}") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def holder(path: str | Path) -> str | None:
    """Who holds the lock at ``path`` now (None: nobody), without taking it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        lock = RunLock(path)
    except RunLocked as exc:
        return str(exc)
    lock.release()
    return None
