"""Benchmark: verify_batch against sequential loops, same run.

    python -m experiments.bench_verify [--data ../shared/data/math500.jsonl] [--workers N]

Verifies the boxed answer of every MATH500 reference solution against its answer:
  baseline    a sequential loop over math-verify (parse both, verify), as a plain script does
  sequential  rlvr_env.verify in a loop (our extraction and fast paths, one process)
  batch       rlvr_env.verify_batch's VerifierPool, workers started and warm (as in training)
and prints the speed-up ratios, where the batch decided its items (here or in the workers)
and the agreement of the three. Each timing is the best of ``--trials`` interleaved samples
(the machine may be shared), a sample repeating a fast method for at least 0.2 s. ``--workload mismatched`` boxes each row's answer against
the next row's, so most items are wrong answers that need sympy and the workers do the
work.
"""

from __future__ import annotations

import argparse
import os
import timeit
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "math500.jsonl"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=1, help="repeat the item list (a larger workload)")
    parser.add_argument("--trials", type=int, default=5, help="timed runs of each method; the best is reported")
    parser.add_argument("--workload", choices=("solutions", "mismatched"), default="solutions",
                        help="solutions: each reference solution vs its answer (cheap items: no sympy); "
                             "mismatched: each answer boxed against the next row's answer (mostly sympy)")
    args = parser.parse_args(argv)

    from math_verify import parse, verify as mv_verify

    from rlvr_env import load_jsonl
    from rlvr_env.verifier import verify
    from rlvr_env.verifier_pool import VerifierPool

    rows = load_jsonl(args.data) * args.repeat
    answers = [r.answer for r in rows]
    if args.workload == "solutions":
        completions = [r.metadata.get("solution", r.prompt) for r in rows]
    else:
        completions = [f"\\boxed{{{answers[(i + 1) % len(rows)]}}}" for i in range(len(rows))]

    methods = {
        "baseline": lambda: [float(bool(mv_verify(parse(f"${a}$"), parse(c)))) for c, a in zip(completions, answers)],
        "sequential": lambda: [verify(c, a).reward for c, a in zip(completions, answers)],
    }
    times: dict[str, float] = {}
    with VerifierPool(args.workers) as pool:
        pool.start(wait_ready=True)  # warm, as in training
        methods["batch"] = lambda: [v.reward for v in pool.map(completions, answers)]
        outputs = {name: fn() for name, fn in methods.items()}  # also warms caches alike
        counts = pool.last_counts
        # a sample repeats a method for at least 0.2 s (timeit's autorange), so that fast ones are timed reliably
        passes = {name: timeit.Timer(fn).autorange()[0] for name, fn in methods.items()}
        for _ in range(args.trials):
            for name, fn in methods.items():
                t = timeit.Timer(fn).timeit(passes[name]) / passes[name]
                times[name] = min(t, times.get(name, float("inf")))

    n = len(rows)
    print(f"{n} items ({args.workload}), {args.workers} workers, best of {args.trials} runs")
    for name, label in (("baseline", "math-verify loop"), ("sequential", "verify() loop"), ("batch", "verify_batch")):
        print(f"  {name:<10} {label:<17} {times[name]:8.3f} s  {n / times[name]:9.1f} items/s"
              f"   correct {int(sum(outputs[name]))}")
    print(f"verify_batch decided {counts['cheap']} items without sympy, {counts['sympy_here']} with sympy here, "
          f"{counts['sympy_workers']} in workers")
    print(f"ratio verify_batch vs math-verify loop: {times['baseline'] / times['batch']:.2f}x")
    print(f"ratio verify_batch vs verify() loop:    {times['sequential'] / times['batch']:.2f}x")
    print(f"agreement verify_batch == verify(): {outputs['batch'] == outputs['sequential']}")
    return times


if __name__ == "__main__":
    main()
