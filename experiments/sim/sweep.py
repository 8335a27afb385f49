"""Sweeps: many runs, batched where they share shapes, in worker processes otherwise.

    from experiments.sim import grid, run_sweep
    specs = grid({"algo": ["grpo", "grpo_hadw"], "reweight.lambda_scale": [1.0, 1.5]},
                 seeds=range(5), base=["train.steps=200"])
    result = run_sweep(specs, workers=2, log_dir="runs/sweep")   # log_dir=None: in memory only
    result.summary("accuracy/hard")    # {label: (mean, 95% CI half-width, seeds)}
    result.runs[0].history.as_dicts()  # the single-run Trainer's per-step dicts

``plan`` groups the specs: runs that ``BatchedSimulator`` can share (same ``batch_key``)
become one batched job; the others (DAPO's dynamic sampling, non-tabular policies) one
single-run job each, run by the ordinary Trainer. Jobs go to ``workers`` processes
(``spawn`` start method: each worker is a fresh interpreter whose main thread runs the
job, as math-verify's signal-based timeouts require; one torch thread per worker). A
script that calls ``run_sweep`` with workers > 1 must guard its entry point with
``if __name__ == "__main__":`` (the spawn start method re-imports it).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import multiprocessing
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import attrs
import numpy as np
import torch

from algorithms import ConfigError
from experiments.sim.batchable import batch_key, unbatchable_reason
from experiments.sim.batched import BatchedSimulator
from experiments.training.build import build_trainer, compose_config
from experiments.sim.history import History
from experiments.compare.stats import mean_ci
from experiments.training.lifecycle import RunDirectory, TrainingRun


@attrs.frozen
class RunSpec:
    """One run of a sweep."""

    name: str
    """Unique name: the run's directory under ``log_dir`` (e.g. ``algo=grpo,seed=0``)."""
    config: dict = attrs.field(eq=False, repr=False)
    """The composed run config (``compose_config(*overrides)``), as ``build_trainer`` takes it."""
    label: str = ""
    """The setting without its seed: runs with the same label are seeds of one setting."""


def grid(axes: Mapping[str, Sequence], seeds: Iterable[int] = range(5), base: Sequence[str] = ()) -> list[RunSpec]:
    """One run per combination of ``axes`` values (Hydra ``key=value`` overrides) and seed,
    on top of the ``base`` overrides. Configs are composed once per setting."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("grid: give at least one seed")
    specs = []
    for values in itertools.product(*axes.values()):
        overrides = [f"{k}={v}" for k, v in zip(axes, values)]
        label = ",".join(overrides) or "base"
        cfg = compose_config(*base, *overrides, f"seed={seeds[0]}")
        for seed in seeds:
            specs.append(RunSpec(f"{label},seed={seed}", {**copy.deepcopy(cfg), "seed": seed}, label))
    if specs and len(seeds) > 1:  # the seed must not reach other fields (no interpolation of ${seed})
        other = compose_config(*base, *[f"{k}={v}" for k, v in zip(axes, next(itertools.product(*axes.values())))], f"seed={seeds[1]}")
        if other != specs[1].config:
            raise RuntimeError("grid: the config depends on the seed beyond `seed`; compose each run with compose_config")
    return specs


@attrs.frozen
class Job:
    """Runs executed together: one BatchedSimulator (``batched``) or one single-run Trainer."""

    specs: tuple[RunSpec, ...]
    batched: bool
    reason: str = ""
    """Why a single-run job is not batched."""


def plan(specs: Sequence[RunSpec], workers: int = 2, max_batch: int | None = None) -> list[Job]:
    """Group ``specs`` into jobs: one per batch of compatible runs (at most ``max_batch``
    runs), one per unbatchable run; the largest batches are halved until every worker has a job."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique; repeated: {sorted({n for n in names if names.count(n) > 1})}")
    for s in specs:
        refused = [key for key in ("resume", "arena") if s.config.get(key)]
        if refused:
            raise ConfigError(f"run {s.name!r}: {refused[0]} is not supported in a sweep (run it with experiments.run)")
    batches: dict[str, list[RunSpec]] = {}
    jobs: list[Job] = []
    for s in specs:
        reason = unbatchable_reason(s.config)
        if reason is None:
            batches.setdefault(batch_key(s.config), []).append(s)
        else:
            jobs.append(Job((s,), False, reason))
    size = max_batch or max((len(b) for b in batches.values()), default=1)
    batched = [Job(tuple(b[i:i + size]), True) for b in batches.values() for i in range(0, len(b), size)]
    while len(batched) + len(jobs) < workers and any(len(j.specs) > 1 for j in batched):
        big = max(batched, key=lambda j: len(j.specs))
        half = (len(big.specs) + 1) // 2
        batched.remove(big)
        batched += [Job(big.specs[:half], True), Job(big.specs[half:], True)]
    return batched + jobs


@attrs.frozen
class RunResult:
    spec: RunSpec
    history: History
    batched: bool
    seconds: float
    """Wall time of the run's job (shared by the runs of a batch)."""
    cpu_seconds: float
    """CPU time of the run's job (its process's; shared by the runs of a batch)."""
    final_probs: np.ndarray | None = attrs.field(default=None, eq=False, repr=False)
    """[N, K] the tabular policy's answer distribution after the last step (None for other
    policies): exact pass@k and mode masses after training."""


def run_job(job: Job, log_dir: str | None, draws: str, events_every: int) -> list[RunResult]:
    """Run one job in this process; with ``log_dir``, write each run's config and events."""
    start, cpu_start = time.perf_counter(), time.process_time()
    run_dirs = [RunDirectory(Path(log_dir) / s.name) if log_dir else None for s in job.specs]
    if job.batched:
        sim = BatchedSimulator([s.config for s in job.specs], draws=draws,
                               run_dirs=[d.path if d else Path("unused") for d in run_dirs])  # validates every run
        for spec, directory in zip(job.specs, run_dirs):
            if directory is not None:
                directory.write_config(spec.config)
        histories = sim.run()
        probs = list(sim.probs_table.numpy())
        for history, directory in zip(histories, run_dirs):
            if directory is not None:
                history.write_events(directory.logger(), every=events_every)
    else:
        (spec,), (directory,) = job.specs, run_dirs
        if directory is None:  # in memory: no events, no checkpoints
            trainer = build_trainer(spec.config, Path("unused"))
            while trainer.step < trainer.params.steps:
                trainer.train_step()
        else:  # the ordinary run: events every step, checkpoints as configured
            with TrainingRun.start(spec.config, directory.path) as run:
                run.train()
            trainer = run.trainer
        histories = [History.from_dicts(trainer.history)]
        probs = [trainer.policy.probs().numpy() if hasattr(trainer.policy, "probs") else None]
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return [RunResult(s, h, job.batched, seconds, cpu, p) for s, h, p in zip(job.specs, histories, probs)]


def worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SweepResult:
    """Every run's result, in the order of the specs."""

    def __init__(self, runs: list[RunResult], seconds: float, jobs: list[Job]):
        self.runs = runs
        self.seconds = seconds
        self.jobs = jobs

    def cpu_seconds(self) -> float:
        """CPU time of all jobs together (a batch counted once)."""
        per_job = {id(job): max(r.cpu_seconds for r in self.runs if r.spec in job.specs) for job in self.jobs}
        return sum(per_job.values())

    def by_label(self) -> dict[str, list[RunResult]]:
        out: dict[str, list[RunResult]] = {}
        for r in self.runs:
            out.setdefault(r.spec.label, []).append(r)
        return out

    def finals(self, key: str, last: int = 1) -> dict[str, list[float]]:
        """label -> final value of ``key`` (mean over the last ``last`` steps) of each seed."""
        return {label: [r.history.final(key, last) for r in runs] for label, runs in self.by_label().items()}

    def summary(self, key: str, last: int = 1) -> dict[str, tuple[float, float, int]]:
        """label -> (mean over seeds, 95% t-interval half-width, seeds) of the final ``key``."""
        return {label: (*mean_ci(v), len(v)) for label, v in self.finals(key, last).items()}


def run_sweep(specs: Sequence[RunSpec], *, workers: int = 2, log_dir: str | None = None, draws: str = "runs",
              max_batch: int | None = None, events_every: int = 1, threads: int = 1, progress=None) -> SweepResult:
    """Run every spec (see module doc); ``progress(done_jobs, total_jobs)`` after each job.

    ``threads``: torch threads per job (1: small tensors on a shared machine lose far more to
    thread synchronisation than they gain). ``draws``: the batched jobs' random draws
    (experiments.sim.draws); single-run jobs always use the Trainer's own streams.
    """
    if workers < 1:
        raise ValueError(f"workers: must be >= 1, got {workers}")
    jobs = plan(specs, workers, max_batch)
    start = time.perf_counter()
    results: dict[str, RunResult] = {}
    if workers == 1 or len(jobs) == 1:
        with torch_threads(threads):
            for i, job in enumerate(jobs):
                results.update((r.spec.name, r) for r in run_job(job, log_dir, draws, events_every))
                if progress is not None:
                    progress(i + 1, len(jobs))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=worker_init,
                                 initargs=(threads,)) as pool:
            futures = [pool.submit(run_job, job, log_dir, draws, events_every) for job in jobs]
            for i, future in enumerate(as_completed(futures)):
                results.update((r.spec.name, r) for r in future.result())
                if progress is not None:
                    progress(i + 1, len(jobs))
    return SweepResult([results[s.name] for s in specs], time.perf_counter() - start, jobs)
