"""Compare algorithms over seeds on the same budget: ``python -m experiments.compare.study``.

    python -m experiments.compare.study algos=[grpo,grpo_hadw] seeds=5
    python -m experiments.compare.study pairs=[grpo,gspo,dapo,cispo] seeds=5 train.ppo_epochs=2
    python -m experiments.compare.study algos=[grpo,grpo_hadw] metric=accuracy/easy optim.name=sgd optim.lr=20

Every run uses the same run-config overrides (any other KEY=VALUE) and seeds 0..S-1, so runs
with the same seed see the same problem bank. Prints a Markdown table of the final value of
``metric`` (mean and 95% t-interval over seeds) and, for ``pairs=[X]``, the paired
difference X_hadw - X with its interval. Runs in-process, no event files.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
from pathlib import Path

import attrs
from tqdm import tqdm

from algorithms.registry import integer
from experiments.cli import fail, parse_args
from experiments.training.build import build_trainer, compose_config
from experiments.compare.stats import mean_ci

def final_value(algo: str, seed: int, overrides: list[str], metric: str, last: int) -> float:
    plain = compose_config(f"algo={algo}", f"seed={seed}", "train.progress=false", *overrides)
    plain["train"]["checkpoint_every"] = 0
    with tempfile.TemporaryDirectory() as tmp:
        history = build_trainer(plain, Path(tmp)).train()
    values = [h[metric] for h in history[-last:] if metric in h and math.isfinite(h[metric])]
    if not values:
        raise SystemExit(f"error: metric {metric!r} was not logged (known: {', '.join(sorted(history[-1]))})")
    return statistics.fmean(values)


@attrs.frozen
class StudyOptions:
    algos: list[str] = attrs.field(factory=list, converter=list)
    """Algorithm presets to run."""
    pairs: list[str] = attrs.field(factory=list, converter=list)
    """Base presets X: runs X and X_hadw, and reports the paired difference X_hadw - X."""
    seeds: int = attrs.field(default=5, validator=integer(2))
    """Seeds 0..S-1 (at least 2, for an interval)."""
    metric: str = "accuracy/hard"
    """TensorBoard tag to compare."""
    last: int = attrs.field(default=1, validator=integer(1))
    """Average the metric over the last N steps (1: the final value)."""


def main(argv: list[str] | None = None) -> str:
    args, overrides = parse_args(argv, StudyOptions, "python -m experiments.compare.study", __doc__, overrides=True)
    pairs = list(args.pairs)
    algos = list(dict.fromkeys(args.algos + [a for p in pairs for a in (p, f"{p}_hadw")]))
    if not algos:
        fail("algos: give algos=[...] and/or pairs=[...]")

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
