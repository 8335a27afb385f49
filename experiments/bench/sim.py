"""Benchmark the batched simulator: ``python -m experiments.bench.sim``.

1. ratio: R runs batched (BatchedSimulator) vs the same R runs one after another with the
   single-run Trainer, same process, same run, same torch threads; goal <= 2/R.
2. full: a sweep of ``full_runs`` x ``full_steps`` x P x G through ``run_sweep``
   (batches split over ``workers`` processes); goal: 100 x 1000 x 1024 x 8 in <= 60 s
   on 2 cores.
3. ``profile=true``: the single-run Trainer at P: seconds per step with one torch thread and
   with the default number, and the top cProfile entries.

    python -m experiments.bench.sim                                  # all of it (minutes)
    python -m experiments.bench.sim prompts=64 full_runs=0           # the ratio at P = 64
    python -m experiments.bench.sim full_steps=100 profile=true
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import attrs
import torch

from algorithms.registry import integer
from experiments.cli import parse_args
from experiments.sim import BatchedSimulator, grid, run_sweep
from experiments.sim.sweep import torch_threads
from experiments.training.build import build_trainer, compose_config


def run_configs(args, runs: int, steps: int) -> list[dict]:
    base = compose_config(f"algo={args.algo}", f"train.steps={steps}", f"train.prompts_per_step={args.prompts}",
                          f"train.group_size={args.group}", f"env.num_prompts={args.bank or args.prompts}",
                          "train.progress=false")
    return [{**base, "seed": seed} for seed in range(runs)]


def time_sequential(configs: list[dict]) -> tuple[float, float]:
    """(build, train) seconds for the single-run Trainer to run every config, one after another."""
    build = train = 0.0
    for cfg in configs:
        start = time.perf_counter()
        trainer = build_trainer(cfg, Path(tempfile.gettempdir()) / "bench_sim_unused")
        middle = time.perf_counter()
        while trainer.step < trainer.params.steps:
            trainer.train_step()
        build, train = build + middle - start, train + time.perf_counter() - middle
    return build, train


def time_batched(configs: list[dict]) -> tuple[float, float]:
    """(build, train) seconds for one BatchedSimulator of every config."""
    start = time.perf_counter()
    sim = BatchedSimulator(configs)
    middle = time.perf_counter()
    sim.run()
    return middle - start, time.perf_counter() - middle


def ratio(args) -> None:
    configs = run_configs(args, args.runs, args.steps)
    with torch_threads(args.threads):
        time_batched(configs[:2])  # warm-up: torch's first optimizer imports torch._dynamo (seconds)
        batched, sequential = [], []
        for _ in range(args.repeats):  # interleaved: the machine's load hits both alike
            sequential.append(time_sequential(configs))
            batched.append(time_batched(configs))
    (b_build, b), (s_build, s) = min(batched, key=sum), min(sequential, key=sum)
    steps = args.runs * args.steps
    print(f"ratio: {args.runs} runs x {args.steps} steps, {args.algo}, P={args.prompts}, G={args.group}, "
          f"bank {args.bank or args.prompts}, torch threads={args.threads}, best of {args.repeats}")
    print(f"  sequential single runs {s:8.2f} s training ({1e3 * s / steps:.3f} ms per run-step) + {s_build:.2f} s building")
    print(f"  batched                {b:8.2f} s training ({1e3 * b / steps:.3f} ms per run-step) + {b_build:.2f} s building")
    print(f"  batched / sequential = {b / s:.4f} training, {(b + b_build) / (s + s_build):.4f} with building "
          f"(goal <= 2/R = {2 / args.runs:.4f})")


def full(args) -> None:
    specs = grid({"algo": [args.algo]}, seeds=range(args.full_runs),
                 base=[f"train.steps={args.full_steps}", f"train.prompts_per_step={args.prompts}",
                       f"train.group_size={args.group}", f"env.num_prompts={args.bank or args.prompts}"])
    start = time.perf_counter()
    result = run_sweep(specs, workers=args.workers, threads=args.threads)
    elapsed = time.perf_counter() - start
    final = [r.history.final("accuracy/all") for r in result.runs]
    cpu = result.cpu_seconds()
    print(f"full: {args.full_runs} runs x {args.full_steps} steps x P={args.prompts} x G={args.group} ({args.algo}), "
          f"{len(result.jobs)} batched job(s) on {args.workers} worker(s): {elapsed:.1f} s wall (process start "
          f"included), {cpu:.1f} CPU s in the jobs ({1e3 * cpu / (args.full_runs * args.full_steps):.2f} ms per run-step; "
          f"on {args.workers} idle cores about {cpu / args.workers:.0f} s); final accuracy/all {statistics.fmean(final):.4f}")


def profile(args) -> None:
    cfg = run_configs(args, 1, 10_000)[0]
    for threads in (torch.get_num_threads(), 1):  # one thread last: it is the one profiled
        with torch_threads(threads):
            trainer = build_trainer(cfg, Path(tempfile.gettempdir()) / "bench_sim_unused")
            trainer.train_step()
            times = []
            for _ in range(args.profile_steps):
                t = time.perf_counter()
                trainer.train_step()
                times.append(time.perf_counter() - t)
            print(f"profile: single-run Trainer, P={args.prompts}, G={args.group}, torch threads={threads}: "
                  f"median {1e3 * statistics.median(times):.1f} ms/step, min {1e3 * min(times):.1f} ms")
            if threads == 1:
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(args.profile_steps):
                    trainer.train_step()
                profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile_top)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))


@attrs.frozen
class SimBenchOptions:
    algo: str = "grpo_hadw"
    """Algorithm preset."""
    prompts: int = attrs.field(default=1024, validator=integer(1))
    """P, prompts per step."""
    bank: int | None = attrs.field(default=None, validator=attrs.validators.optional(integer(1)))
    """env.num_prompts (default: P, every prompt each step)."""
    group: int = attrs.field(default=8, validator=integer(2))
    """G."""
    runs: int = attrs.field(default=16, validator=integer(0))
    """R for the ratio (0: skip it)."""
    steps: int = attrs.field(default=30, validator=integer(1))
    """Steps for the ratio."""
    repeats: int = attrs.field(default=3, validator=integer(1))
    """Timings per side for the ratio, the best kept."""
    threads: int = attrs.field(default=1, validator=integer(1))
    """Torch threads per process."""
    full_runs: int = attrs.field(default=100, validator=integer(0))
    """Runs of the full sweep (0: skip it)."""
    full_steps: int = attrs.field(default=1000, validator=integer(1))
    """Steps of the full sweep."""
    workers: int = attrs.field(default=2, validator=integer(1))
    """Worker processes of the full sweep."""
    profile: bool = False
    """Profile the single-run Trainer too."""
    profile_steps: int = attrs.field(default=20, validator=integer(1))
    """Steps profiled."""
    profile_top: int = attrs.field(default=15, validator=integer(1))
    """cProfile entries shown."""


def main(argv: list[str] | None = None) -> None:
    args, _ = parse_args(argv, SimBenchOptions, "python -m experiments.bench.sim", __doc__)
    if args.runs > 0:
        ratio(args)
    if args.full_runs > 0:
        full(args)
    if args.profile:
        profile(args)


if __name__ == "__main__":
    main()
