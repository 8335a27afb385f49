"""Benchmark: verify_batch (worker processes) against a sequential loop, same run.

    python -m experiments.bench_verify [--data ../shared/data/math500.jsonl] [--workers N]

Verifies the boxed answer of every MATH500 reference solution against its answer:
  baseline    a sequential loop over math-verify (parse both, verify), as a plain script does
  sequential  rlvr_env.verify in a loop (our extraction and string fast path, one process)
  batch       rlvr_env.verify_batch with a warm, reused pool (as in training)
and prints the speed-up ratios and the agreement of the three. ``--workload mismatched``
boxes each row's answer against the next row's, so every item goes through sympy and
the batch/sequential ratio measures the worker processes alone.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "math500.jsonl"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=1, help="repeat the item list (a larger workload)")
    parser.add_argument("--workload", choices=("solutions", "mismatched"), default="solutions",
                        help="solutions: each reference solution vs its answer (mostly the string fast path); "
                             "mismatched: each answer boxed against the next row's answer (every item needs sympy)")
    args = parser.parse_args(argv)

    from math_verify import parse, verify as mv_verify

    from rlvr_env import load_jsonl
    from rlvr_env.verifier import VerifierPool, verify

    rows = load_jsonl(args.data) * args.repeat
    answers = [r.answer for r in rows]
    if args.workload == "solutions":
        completions = [r.metadata.get("solution", r.prompt) for r in rows]
    else:
        completions = [f"\\boxed{{{answers[(i + 1) % len(rows)]}}}" for i in range(len(rows))]

    start = time.perf_counter()
    base = [bool(mv_verify(parse(f"${a}$"), parse(c))) for c, a in zip(completions, answers)]
    t_base = time.perf_counter() - start

    start = time.perf_counter()
    seq = [verify(c, a).reward for c, a in zip(completions, answers)]
    t_seq = time.perf_counter() - start

    with VerifierPool(args.workers) as pool:
        pool.map(completions[:8], answers[:8])  # warm-up: start the workers
        start = time.perf_counter()
        batch = [v.reward for v in pool.map(completions, answers)]
        t_batch = time.perf_counter() - start

    n = len(rows)
    print(f"{n} items ({args.workload}), {args.workers} workers")
    print(f"  baseline   math-verify loop   {t_base:7.2f} s   {n / t_base:7.1f} items/s   correct {sum(base)}")
    print(f"  sequential verify() loop      {t_seq:7.2f} s   {n / t_seq:7.1f} items/s   correct {int(sum(seq))}")
    print(f"  batch      verify_batch       {t_batch:7.2f} s   {n / t_batch:7.1f} items/s   correct {int(sum(batch))}")
    print(f"ratio verify_batch vs math-verify loop: {t_base / t_batch:.2f}x")
    print(f"ratio verify_batch vs verify() loop:    {t_seq / t_batch:.2f}x")
    print(f"agreement verify_batch == verify(): {batch == seq}")
    return {"baseline": t_base, "sequential": t_seq, "batch": t_batch}


if __name__ == "__main__":
    main()
