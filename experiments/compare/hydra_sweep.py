"""Hydra multirun sweeps: ``python -m experiments.run -m seed=0,1,2 algo=grpo,grpo_hadw``.

Each job is an ordinary run (its own directory under ``train.log_dir``). Hydra's sweep
bookkeeping goes to ``<train.log_dir>/sweeps/<time>/`` (never the current directory), and
``SweepSummary``, a Hydra callback, ends the sweep with one table: the final value of the
main metrics per configuration (the overrides other than ``seed``), as mean and 95%
t-interval over its seeds, printed and written to ``<sweep dir>/summary.md``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from experiments.training.build import override_key
from experiments.compare.stats import mean_ci
from experiments.training import metrics as M

SWEEP_METRICS = (*M.FINAL_ACCURACY, M.REWARD)


def sweep_table(results: list[tuple[list[str], dict[str, float]]], metrics=SWEEP_METRICS) -> str:
    """Markdown table of final metrics per configuration: ``results`` is (overrides, final values) per job."""
    values_of: dict[str, set[str]] = defaultdict(set)
    for overrides, _ in results:
        for o in overrides:
            values_of[override_key(o)].add(o)
    varying = {k for k, v in values_of.items() if len(v) > 1 and k != "seed"}
    common = sorted({o for overrides, _ in results for o in overrides if override_key(o) not in varying | {"seed"}})
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for overrides, final in results:
        groups[" ".join(o for o in overrides if override_key(o) in varying) or "(all runs)"].append(final)
    shown = [m for m in metrics if any(m in f and math.isfinite(f[m]) for fs in groups.values() for f in fs)]
    lines = [f"final metrics over seeds: mean ± 95% CI ({len(results)} runs; common overrides: "
             f"{' '.join(common) or 'none'})", "",
             "| configuration | runs | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
    for label, finals in groups.items():
        cells = []
        for m in shown:
            values = [f[m] for f in finals if m in f and math.isfinite(f[m])]
            mean, half = mean_ci(values) if values else (math.nan, math.nan)
            cells.append(f"{mean:.4f}" + (f" ± {half:.4f}" if math.isfinite(half) else ""))
        lines.append(f"| {label} | {len(finals)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class SweepSummary(Callback):
    """Collects each job's final metrics and prints the sweep's table at the end."""

    def __init__(self) -> None:
        self.results: list[tuple[list[str], dict[str, float]]] = []

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        value = getattr(job_return, "_return_value", None)  # unset when the job raised
        if isinstance(value, dict):
            self.results.append((list(job_return.overrides), value))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        for job_dir in sweep_dir.glob("*"):  # Hydra's per-job folders: empty, since runs write under log_dir
            if job_dir.is_dir() and not any(job_dir.iterdir()):
                job_dir.rmdir()
        if not self.results:
            return
        table = sweep_table(self.results)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "summary.md").write_text(table + "\n")
        print("\n" + table + f"\n\nsweep directory: {sweep_dir}")
