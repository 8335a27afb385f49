"""Worker processes for the sympy part of verification (``rlvr_env.verifier``).

A worker is ``python -c _WORKER_MAIN <verifier.py> <read fd> <write fd>``: a fresh
interpreter that loads ``verifier.py`` by path under a private name, so it never imports
the caller's ``__main__`` (a script without ``if __name__ == "__main__":`` works, unlike
multiprocessing's spawn and forkserver), nor the rlvr_env package and torch, and no process
is forked without exec (safe beside threads). Messages are pickled over two pipes.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait

import attrs

from rlvr_env import verifier
from rlvr_env.verifier import WORKER_HASH_SEED, Verdict, VerifyConfig, cheap_verdict, hash_pinned, reference, sympy_verdict

_WORKER_MAIN = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_rlvr_verifier_worker', sys.argv[1])\n"
    "module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module._serve(int(sys.argv[2]), int(sys.argv[3]))\n")
START_SECONDS = 120.0
"""A worker that has not said "ready" this long after its launch is an error."""


PIPELINE = 2
"""Items queued per worker: it starts the next one without waiting for the parent to wake."""
PROBE_EVERY = 8
"""With workers up, every this many calls go the way that was slower lately, to time it again."""


@attrs.define(eq=False)
class _Worker:
    proc: subprocess.Popen
    inbox: Connection
    outbox: Connection
    launched: float
    ready: bool = False
    jobs: deque = attrs.Factory(deque)
    """(item index, completion) sent and not yet answered, in order."""
    since: float = 0.0
    """When the first of ``jobs`` started (it was sent, or the one before it answered)."""

    @classmethod
    def launch(cls) -> _Worker:
        to_worker, from_worker = os.pipe(), os.pipe()
        env = {**os.environ, "PYTHONHASHSEED": WORKER_HASH_SEED}  # one verdict for one pair everywhere
        proc = subprocess.Popen([sys.executable, "-c", _WORKER_MAIN, os.path.abspath(verifier.__file__), str(to_worker[0]),
                                 str(from_worker[1])], pass_fds=(to_worker[0], from_worker[1]), stdin=subprocess.DEVNULL,
                                 env=env)
        os.close(to_worker[0])
        os.close(from_worker[1])
        return cls(proc, Connection(from_worker[0], writable=False), Connection(to_worker[1], readable=False), time.monotonic())

    def close(self, kill: bool) -> None:
        self.outbox.close()  # EOF: an idle worker exits
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.inbox.close()


class VerifierPool:
    """Verifies in order: the cheap part here, the sympy part here or in worker processes.

    Workers start once the calling process has spent ``in_process_seconds`` on sympy items
    (a few such items never pay for starting processes), or at once off the main thread.
    Once they are up, each call's sympy items go where items went faster lately (wall
    seconds per item, here or in the workers: busy cores or one core make workers slower).
    Each worker has up to ``PIPELINE`` items queued; each item has a hard deadline of
    3 * timeout + grace seconds from its start (parse reference, parse answer, compare); past
    it the item is scored ``timeout``, its worker killed and replaced, and the items queued
    behind it sent again. While no worker is busy (none is up yet), the calling process
    (main thread) verifies items itself. Items verified here have math-verify's signal
    timeout only: ``in_process_seconds=0`` sends every sympy item to a worker. A worker that
    dies while starting raises RuntimeError.

    ``in_process``: whether sympy items may be verified in this process at all. None (the
    default): only where its string hash seed is the workers' (``hash_pinned()``: started
    with PYTHONHASHSEED=0), since math-verify's verdict can depend on it; True: also
    elsewhere (its verdicts may then differ from another process's on such pairs).
    """

    def __init__(self, workers: int | None = None, config: VerifyConfig = VerifyConfig(), grace: float = 5.0,
                 in_process_seconds: float = 1.0, in_process: bool | None = None):
        self.workers = workers or os.cpu_count() or 1
        if self.workers < 1 or in_process_seconds < 0 or 3 * config.timeout + grace <= 0:
            raise ValueError(f"need workers >= 1, in_process_seconds >= 0, 3 * timeout + grace > 0; got "
                             f"{self.workers}, {in_process_seconds}, {3 * config.timeout + grace}")
        self.config, self.in_process_seconds = config, in_process_seconds
        self.in_process = hash_pinned() if in_process is None else in_process
        self.deadline = 3 * config.timeout + grace
        self.spent_here = 0.0
        """Seconds the calling process has spent on sympy items."""
        self.seconds_per_item: dict[str, float | None] = {"here": None, "workers": None}
        """Recent wall seconds per sympy item, verified here and by workers that were up."""
        self._calls = 0
        self.last_counts = {"cheap": 0, "sympy_here": 0, "sympy_workers": 0}
        """Where the items of the last ``map`` were decided."""
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()  # one ``map`` at a time

    def start(self, wait_ready: bool = False) -> None:
        """Launch the missing workers (they start in the background unless ``wait_ready``)."""
        self._workers += [_Worker.launch() for _ in range(self.workers - len(self._workers))]
        while wait_ready and not all(w.ready for w in self._workers):
            self._receive([], deque(), None)

    @property
    def running(self) -> int:
        """Worker processes alive now."""
        return sum(w.proc.poll() is None for w in self._workers)

    def map(self, completions: Sequence[str], answers: Sequence[str]) -> list[Verdict]:
        """[N] completions, [N] reference answers -> [N] verdicts, as ``verify`` gives them."""
        if len(completions) != len(answers):
            raise ValueError(f"{len(completions)} completions but {len(answers)} answers")
        with self._lock:
            return self._map(completions, answers)

    def _map(self, completions: Sequence[str], answers: Sequence[str]) -> list[Verdict]:
        refs = {a: reference(a, self.config.max_completion_chars)  # a group's completions share one answer
                for a in dict.fromkeys(a for a in answers if isinstance(a, str))}
        results: list = [cheap_verdict(c, refs[a], self.config) if isinstance(a, str) else
                         Verdict(0.0, None, f"error: answer must be str, got {type(a).__name__}")
                         for c, a in zip(completions, answers)]
        todo = deque((i, completions[i][-self.config.max_completion_chars:]) for i, r in enumerate(results) if r is None)
        here = self.in_process and threading.current_thread() is threading.main_thread()
        counts = self.last_counts = {"cheap": len(results) - len(todo), "sympy_here": 0, "sympy_workers": 0}
        up = bool(self._workers) and all(w.ready for w in self._workers)
        if todo and here and self.in_process_seconds > 0 and up and self._here_is_faster():
            self._note("here", sum(self._verify_here(item, refs[answers[item[0]]], results) for item in todo), len(todo))
            return results  # type: ignore[return-value]
        start, time_here = time.monotonic(), 0.0
        while todo or any(w.jobs for w in self._workers):
            if not self._workers and not (here and self.spent_here < self.in_process_seconds):
                self.start()
            for w in self._workers:
                while w.ready and len(w.jobs) < PIPELINE and todo:
                    i, completion = todo.popleft()
                    try:
                        w.outbox.send((completion, answers[i], attrs.astuple(self.config)))
                    except OSError:  # it died while idle
                        todo.appendleft((i, completion))
                        self._replace(w, todo)
                        break
                    w.since = w.since if w.jobs else time.monotonic()
                    w.jobs.append((i, completion))
                    counts["sympy_workers"] += 1
            # no worker is busy, so none is up: the caller verifies one item meanwhile
            work_here = here and todo and self.in_process_seconds > 0 and not any(w.jobs for w in self._workers)
            self._receive(results, todo, time.monotonic() if work_here else None)
            if work_here:
                item = todo.pop()
                time_here += self._verify_here(item, refs[answers[item[0]]], results)
        if up and counts["sympy_workers"] and not counts["sympy_here"]:
            self._note("workers", time.monotonic() - start, counts["sympy_workers"])
        if counts["sympy_here"]:
            self._note("here", time_here, counts["sympy_here"])
        return results  # type: ignore[return-value]

    def _verify_here(self, item: tuple[int, str], ref, results: list) -> float:
        """Verify one item (index, completion) against ``ref`` in this process; its seconds."""
        start = time.monotonic()
        results[item[0]] = sympy_verdict(item[1], ref, self.config)
        seconds = time.monotonic() - start
        self.spent_here += seconds
        self.last_counts["sympy_here"] += 1
        return seconds

    def _here_is_faster(self) -> bool:
        """Where a call's sympy items go once workers are up: where items went faster lately,
        but every ``PROBE_EVERY``-th call the other way; first, the way not yet timed."""
        self._calls += 1
        here, workers = self.seconds_per_item["here"], self.seconds_per_item["workers"]
        if here is None or workers is None:
            return workers is not None
        return (here < workers) != (self._calls % PROBE_EVERY == 0)

    def _note(self, where: str, seconds: float, items: int) -> None:
        old, new = self.seconds_per_item[where], seconds / items
        self.seconds_per_item[where] = new if old is None else (old + new) / 2

    def _receive(self, results: list, todo: deque, until: float | None) -> None:
        """Take the workers' messages until ``until`` (None: the next deadline or start-up
        limit); then score overdue items ``timeout`` and replace their workers."""
        waiting = {w.inbox: w for w in self._workers if w.jobs or not w.ready}
        limits = [w.since + self.deadline if w.jobs else w.launched + START_SECONDS for w in waiting.values()]
        until = until if until is not None else min(limits, default=time.monotonic())
        for inbox in wait(list(waiting), timeout=max(0.0, until - time.monotonic())):
            w = waiting[inbox]
            try:
                message = inbox.recv()
            except EOFError:  # the worker died
                code = w.proc.wait()
                if not w.ready:
                    w.close(kill=True)
                    self._workers.remove(w)  # the next call tries again
                    raise RuntimeError(f"a verifier worker ({sys.executable}) exited with code {code} while starting; "
                                       "its error is printed above") from None
                i, _ = w.jobs.popleft()
                results[i] = Verdict(0.0, None, f"error: verifier worker died (exit code {code})")
                self._replace(w, todo)
                continue
            if message == "ready":
                w.ready = True
            else:
                i, _ = w.jobs.popleft()
                results[i] = Verdict(*message)
                w.since = time.monotonic()
        now = time.monotonic()
        for w in list(self._workers):
            if w.jobs and now > w.since + self.deadline:  # stuck, perhaps in C code: kill it
                i, _ = w.jobs.popleft()
                results[i] = Verdict(0.0, None, "timeout")
                self._replace(w, todo)
            elif not w.ready and now > w.launched + START_SECONDS:
                raise RuntimeError(f"verifier workers did not start within {START_SECONDS:.0f} s")

    def _replace(self, worker: _Worker, todo: deque) -> None:
        """Kill ``worker``, send its queued items again, start a new one in its place."""
        todo.extendleft(reversed(worker.jobs))
        worker.close(kill=True)
        self._workers[self._workers.index(worker)] = _Worker.launch()

    def close(self) -> None:
        for w in self._workers:
            w.outbox.close()
        for w in self._workers:
            w.close(kill=bool(w.jobs))
        self._workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_POOLS: dict[tuple, VerifierPool] = {}


@atexit.register
def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.close()


def shared_pool(workers: int | None, config: VerifyConfig) -> VerifierPool:
    """The pool ``verify_batch`` uses for these settings (made once, closed at exit)."""
    key = (workers, config)
    if key not in _POOLS:
        _POOLS[key] = VerifierPool(workers, config)
    return _POOLS[key]


def verify(completion: str, answer: str, config: VerifyConfig = VerifyConfig()) -> Verdict:
    """Score one completion against the reference answer (``verify_batch`` of one item)."""
    return verify_batch([completion], [answer], config)[0]


def verify_batch(completions: Sequence[str], answers: Sequence[str], config: VerifyConfig = VerifyConfig(),
                 workers: int | None = None) -> list[Verdict]:
    """``verify_here`` for many items, results in input order, one verdict per pair in every
    process (see ``VerifierPool``), from any thread, also in a script without a main guard:
    the pool of these settings is kept and reused."""
    return shared_pool(workers, config).map(completions, answers)
