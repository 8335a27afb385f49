"""Compare algorithms over seeds on the same budget: ``python -m experiments.study``.

    python -m experiments.study --algos grpo grpo_hadw --seeds 5
    python -m experiments.study --pairs grpo,gspo,dapo,cispo --seeds 5 -- train.ppo_epochs=2
    python -m experiments.study --algos grpo grpo_hadw --metric accuracy/easy -- optim.name=sgd optim.lr=20

Every run uses the same config overrides (after ``--``) and seeds 0..S-1, so runs with the
same seed see the same problem bank. Prints a Markdown table of the final value of
``--metric`` (mean and 95% t-interval over seeds) and, for ``--pairs X``, the paired
difference X_hadw - X with its interval. Runs in-process, no event files.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from experiments.config import build_trainer, compose_config
from experiments.stats import mean_ci

def final_value(algo: str, seed: int, overrides: list[str], metric: str, last: int) -> float:
    plain = compose_config(f"algo={algo}", f"seed={seed}", "train.progress=false", *overrides)
    plain["train"]["checkpoint_every"] = 0
    with tempfile.TemporaryDirectory() as tmp:
        history = build_trainer(plain, Path(tmp)).train()
    values = [h[metric] for h in history[-last:] if metric in h and math.isfinite(h[metric])]
    if not values:
        raise SystemExit(f"error: metric {metric!r} was not logged (known: {', '.join(sorted(history[-1]))})")
    return statistics.fmean(values)


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m experiments.study", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--algos", nargs="*", default=[], help="algorithm presets to run")
    parser.add_argument("--pairs", default="", help="comma-separated base presets X: runs X and X_hadw, reports the paired difference")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..S-1 (default 5)")
    parser.add_argument("--metric", default="accuracy/hard", help="TensorBoard tag to compare (default accuracy/hard)")
    parser.add_argument("--last", type=int, default=1, help="average the metric over the last N steps (default 1: final)")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be >= 2 for an interval")
    pairs = [p for p in args.pairs.split(",") if p]
    algos = list(dict.fromkeys(args.algos + [a for p in pairs for a in (p, f"{p}_hadw")]))
    if not algos:
        parser.error("give --algos and/or --pairs")

    results: dict[str, list[float]] = {}
    with tqdm(total=len(algos) * args.seeds, desc="study", file=sys.stderr) as bar:
        for algo in algos:
            results[algo] = []
            for seed in range(args.seeds):
                results[algo].append(final_value(algo, seed, overrides, args.metric, args.last))
                bar.update(1)

    lines = [f"final {args.metric} (last {args.last} step(s)), {args.seeds} seeds, overrides: {' '.join(overrides) or 'none'}", "",
             "| algorithm | mean | 95% CI |", "|---|---|---|"]
    for algo, values in results.items():
        m, h = mean_ci(values)
        lines.append(f"| {algo} | {m:.4f} | ± {h:.4f} |")
    if pairs:
        lines += ["", "| paired difference | mean | 95% CI | seeds better |", "|---|---|---|---|"]
        for p in pairs:
            diffs = [b - a for a, b in zip(results[p], results[f"{p}_hadw"])]
            m, h = mean_ci(diffs)
            lines.append(f"| {p}_hadw - {p} | {m:+.4f} | ± {h:.4f} | {sum(d > 0 for d in diffs)}/{len(diffs)} |")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
