"""Benchmark: verify_batch against sequential loops, same run; agreement with math-verify.

    python -m experiments.bench.verify [data_dir=DIR] [workload=solutions|mismatched|agreement] [workers=N]

Times three ways of verifying one workload:
  baseline    a sequential loop over math-verify (parse both, verify), as a plain script does
  sequential  rlvr_env.verifier.verify_here in a loop (our extraction, fast paths, one process)
  batch       rlvr_env.verify_batch's VerifierPool, workers started and warm (as in training)
and prints the speed-up ratios, where the batch decided its items (here or in the workers)
and whether batch and loop agree. Workloads: ``solutions`` (each MATH500 reference solution
against its answer: mostly cheap items), ``mismatched`` (each answer boxed against the next
row's answer: mostly sympy items), ``agreement`` (the pair set below). Each timing is the best
of interleaved samples (the machine may be shared): ``trials`` of the baseline, and as many
of the loop and the batch as fit in the same time; a sample repeats a fast method for at
least 0.2 s. The workers' speed-up needs idle cores: where other sessions keep the cores busy,
Linux's autogroup scheduler gives all processes of one session (the workers too) one fair
share. The batch verifies sympy items in this process only where its hash seed is the
workers' (``PYTHONHASHSEED=0``); otherwise in the workers.

Then, on a fixed set of pairs built from the benchmark files (``experiments.bench.agreement``:
references, boxed and unboxed renderings, distractors, whole solutions), it prints the share of
pairs where ``verify_batch`` and math-verify's default ``parse`` / ``verify`` agree, and every
disagreement with its reason.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import attrs

from algorithms.registry import ge, integer, one_of
from experiments.cli import parse_args
from rlvr_env.datasets import default_data_dir

def sample(fn, passes: int) -> float:
    """Seconds per call of ``fn``, over ``passes`` calls."""
    start = time.perf_counter()
    for _ in range(passes):
        fn()
    return (time.perf_counter() - start) / passes


def workload(name: str, data_dir: Path, repeat: int) -> tuple[list[str], list[str]]:
    """(completions, answers) of a workload."""
    from experiments.bench.agreement import agreement_pairs
    from rlvr_env import load_jsonl

    if name == "agreement":
        pairs = agreement_pairs(data_dir) * repeat
        return [p.completion for p in pairs], [p.reference for p in pairs]
    rows = load_jsonl(data_dir / "math500.jsonl") * repeat
    answers = [r.answer for r in rows]
    if name == "solutions":
        return [r.metadata["solution"] for r in rows], answers
    return [f"\\boxed{{{answers[(i + 1) % len(rows)]}}}" for i in range(len(rows))], answers


@attrs.frozen
class VerifyBenchOptions:
    data_dir: str | None = None
    """The benchmark files (default: rlvr_env.datasets.default_data_dir(): RLVR_DATA_DIR, else
    ../shared/data beside the checkout)."""
    workers: int = attrs.field(factory=lambda: os.cpu_count() or 1, validator=integer(1))
    """Worker processes of the pool (default: one per core)."""
    repeat: int = attrs.field(default=1, validator=integer(1))
    """Repeat the item list (a larger workload)."""
    trials: int = attrs.field(default=5, validator=integer(1))
    """Timed runs of each method; the best is reported."""
    workload: str = attrs.field(default="solutions", validator=one_of("solutions", "mismatched", "agreement"))
    """solutions: each MATH500 reference solution vs its answer (mostly cheap items); mismatched:
    each answer boxed against the next row's answer (mostly sympy); agreement: the agreement pair set."""
    in_process_seconds: float = attrs.field(default=1.0, validator=ge(0.0))
    """VerifierPool's in_process_seconds; 0 sends every sympy item to the workers."""
    agreement: bool = True
    """Then the agreement report."""


def main(argv=None) -> dict:
    args, _ = parse_args(argv, VerifyBenchOptions, "python -m experiments.bench.verify", __doc__)
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its per-item timeout warnings

    from experiments.bench.agreement import agreement, agreement_pairs, math_verify_gold, print_agreement
    from math_verify import parse, verify as mv_verify
    from rlvr_env.verifier import verify_here
    from rlvr_env.verifier_pool import VerifierPool

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    completions, answers = workload(args.workload, data_dir, args.repeat)
    methods = {
        "baseline": lambda: [float(bool(mv_verify(parse(math_verify_gold(a)), parse(c)))) for c, a in zip(completions, answers)],
        "sequential": lambda: [verify_here(c, a).reward for c, a in zip(completions, answers)],
    }
    times: dict[str, float] = {}
    with VerifierPool(args.workers, in_process_seconds=args.in_process_seconds) as pool:
        pool.start(wait_ready=True)  # warm, as in training
        methods["batch"] = lambda: [v.reward for v in pool.map(completions, answers)]
        outputs = {name: fn() for name, fn in methods.items()}  # also warms caches alike
        # a sample repeats a method for at least 0.2 s, so that fast ones are timed reliably
        # (garbage collection stays on, as in training: timeit would turn it off); in each trial
        # the loop and the batch alternate for about as long as one baseline sample takes
        one = {name: sample(fn, 1) for name, fn in methods.items()}
        passes = {name: max(1, math.ceil(0.2 / t)) for name, t in one.items()}
        rounds = max(1, int(one["baseline"] * passes["baseline"] / sum(one[k] * passes[k] for k in ("sequential", "batch"))))
        ways = {"cheap": 0, "sympy_here": 0, "sympy_workers": 0}  # summed over the last call of each batch sample
        for _ in range(args.trials):
            for name in ["baseline"] + ["sequential", "batch"] * rounds:
                times[name] = min(sample(methods[name], passes[name]), times.get(name, float("inf")))
                if name == "batch":
                    ways = {k: v + pool.last_counts[k] for k, v in ways.items()}
        rates = {k: f"{1000 * v:.1f} ms" if v is not None else "-" for k, v in pool.seconds_per_item.items()}
        pairs = agreement_pairs(data_dir) if args.agreement else []
        verdicts = [v.reward for v in pool.map([p.completion for p in pairs], [p.reference for p in pairs])]

    n = len(completions)
    print(f"{n} items ({args.workload}), {args.workers} workers, best of {args.trials} samples "
          f"(loop and batch: {args.trials * rounds}); sympy here: {'yes' if pool.in_process else 'no (hash seed not 0)'}")
    for name, label in (("baseline", "math-verify loop"), ("sequential", "verify_here loop"), ("batch", "verify_batch")):
        print(f"  {name:<10} {label:<17} {times[name]:8.3f} s  {n / times[name]:9.1f} items/s"
              f"   correct {int(sum(outputs[name]))}")
    print(f"verify_batch, last call of each sample: {ways['cheap']} items without sympy, "
          f"{ways['sympy_here']} with sympy here, {ways['sympy_workers']} in workers; "
          f"wall per sympy item lately: here {rates['here']}, workers {rates['workers']}")
    print(f"ratio verify_batch vs math-verify loop: {times['baseline'] / times['batch']:.2f}x")
    print(f"ratio verify_batch vs verify_here loop: {times['sequential'] / times['batch']:.2f}x")
    print(f"agreement verify_batch == verify_here loop: {outputs['batch'] == outputs['sequential']}")
    if pairs:
        print_agreement(agreement(pairs, verdicts))
    return times


if __name__ == "__main__":
    main()
