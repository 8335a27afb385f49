"""Benchmark the batched simulator: ``python -m experiments.bench_sim``.

1. ratio: R runs batched (BatchedSimulator) vs the same R runs one after another with the
   single-run Trainer, same process, same run, same torch threads; goal <= 2/R.
2. full: a sweep of ``--full-runs`` x ``--full-steps`` x P x G through ``run_sweep``
   (batches split over ``--workers`` processes); goal: 100 x 1000 x 1024 x 8 in <= 60 s
   on 2 cores.
3. ``--profile``: the single-run Trainer at P: seconds per step with one torch thread and
   with the default number, and the top cProfile entries.

    python -m experiments.bench_sim                                  # all of it (minutes)
    python -m experiments.bench_sim --prompts 64 --full-runs 0       # the ratio at P = 64
    python -m experiments.bench_sim --full-steps 100 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from experiments.sim import BatchedSimulator, grid, run_sweep
from experiments.sim.components import build_trainer, compose_config
from experiments.sim.sweep import torch_threads


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_sim", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--algo", default="grpo_hadw", help="algorithm preset (default grpo_hadw)")
    parser.add_argument("--prompts", type=int, default=1024, help="P, prompts per step (default 1024)")
    parser.add_argument("--bank", type=int, default=None, help="env.num_prompts (default: P, every prompt each step)")
    parser.add_argument("--group", type=int, default=8, help="G (default 8)")
    parser.add_argument("--runs", type=int, default=16, help="R for the ratio (default 16)")
    parser.add_argument("--steps", type=int, default=30, help="steps for the ratio (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per side for the ratio, best kept (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--full-runs", type=int, default=100, help="runs of the full sweep (0: skip; default 100)")
    parser.add_argument("--full-steps", type=int, default=1000, help="steps of the full sweep (default 1000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the full sweep (default 2)")
    parser.add_argument("--profile", action="store_true", help="profile the single-run Trainer too")
    parser.add_argument("--profile-steps", type=int, default=20)
    parser.add_argument("--profile-top", type=int, default=15)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.runs > 0:
        ratio(args)
    if args.full_runs > 0:
        full(args)
    if args.profile:
        profile(args)


if __name__ == "__main__":
    main()
