"""Run the claims' experiments and write their runs: ``python -m experiments.claims`` (see the package doc)."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from hydra.errors import HydraException

import attrs

from algorithms import ConfigError
from algorithms.registry import integer
from experiments.claims import EXPERIMENTS, PASS_K
from experiments.claims.rules import ASSESS, Row
from experiments.cli import fail, parse_args
from experiments.sim import BatchedSimulator, History, plan
from experiments.sim.sweep import Job, run_job, worker_init
from experiments.training.lifecycle import RunDirectory


def probe(sim: BatchedSimulator) -> dict[str, torch.Tensor]:
    """Exact facts about the R policies after a step, [R] each (F-GRPO's and A-GRAE's quantities).

    modes/unsampled_correct   E over prompts of sum over correct answers j of pi_j (1 - pi_j)^G:
                              the correct mass a group of G leaves unsampled
    modes/rare_mass           mean pi(rare correct mode) (bandit)
    pass@k/K                  exact pass@K over the bank: mean of 1 - (1 - p)^K
    """
    probs, correct, g = sim.probs_table, sim.correct, sim.params.group_size  # (R, N, K)
    p = (probs * correct).sum(-1)  # (R, N)
    out = {"modes/unsampled_correct": (probs * correct * (1 - probs) ** g).sum(-1).mean(-1)}
    rare = getattr(sim.bank, "rare_answer", None)
    if rare is not None:
        out["modes/rare_mass"] = probs.gather(-1, rare[..., None]).squeeze(-1).mean(-1)
    out.update({f"pass@k/{k}": (1 - (1 - p) ** k).mean(-1) for k in PASS_K})
    return out


def with_probes(history: History, rows: list[np.ndarray], keys: list[str]) -> History:
    return History(history.keys + tuple(keys), np.concatenate([history.values, np.stack(rows).astype(np.float32)], axis=1))


def run_claim_job(job: Job, out: str) -> list[tuple[str, float]]:
    """Run one job, write each run's config and events under ``out``; (name, seconds) per run."""
    start = time.perf_counter()
    if not job.batched:
        return [(r.spec.name, r.seconds) for r in run_job(job, out, "runs", 1)]
    run_dirs = [Path(out) / s.name for s in job.specs]
    sim = BatchedSimulator([s.config for s in job.specs], run_dirs=run_dirs)
    probes: list[dict[str, torch.Tensor]] = []
    histories = sim.run(on_step=lambda step: probes.append(probe(sim)))
    keys = list(probes[0])
    table = np.stack([torch.stack([p[k] for k in keys], -1).numpy() for p in probes])  # (S, R, M)
    for r, (spec, history, run_dir) in enumerate(zip(job.specs, histories, run_dirs)):
        directory = RunDirectory(run_dir)
        directory.write_config(spec.config)
        with_probes(history, list(table[:, r]), keys).write_events(directory.logger())
    seconds = time.perf_counter() - start
    return [(s.name, seconds) for s in job.specs]


def run_experiments(names: list[str], out: str, workers: int = 2, seeds: int | None = None,
                    extra: tuple[str, ...] = (), progress=None) -> float:
    """Run the experiments ``names`` into ``out``; returns the wall time in seconds."""
    start = time.perf_counter()
    exps = [EXPERIMENTS[n] for n in names]
    specs = {e.name: e.specs(seeds, extra) for e in exps}
    all_specs = [s for ss in specs.values() for s in ss]
    trainer = [s for s in all_specs if s.label.endswith(",trainer")]
    jobs = plan([s for s in all_specs if s not in trainer], workers, max_batch=40)
    jobs += [Job((s,), False, "histograms of the reweighting weights") for s in trainer]
    jobs.sort(key=lambda j: -len(j.specs) * j.specs[0].config["train"]["steps"])  # longest first
    for e in exps:  # a rerun replaces the experiment's runs (old event files would mix with the new)
        shutil.rmtree(Path(out) / e.name, ignore_errors=True)
        (Path(out) / e.name).mkdir(parents=True)
    if workers == 1 or len(jobs) == 1:
        torch.set_num_threads(1)
        for i, job in enumerate(jobs):
            run_claim_job(job, out)
            if progress:
                progress(i + 1, len(jobs))
    else:
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=worker_init, initargs=(1,)) as pool:
            for i, future in enumerate(as_completed([pool.submit(run_claim_job, j, out) for j in jobs])):
                future.result()
                if progress:
                    progress(i + 1, len(jobs))
    seconds = time.perf_counter() - start
    for e in exps:
        manifest = {"name": e.name, "title": e.title, "command": e.command(), "base": list(e.base), "extra": list(extra),
                    "settings": {k: list(v) for k, v in e.settings.items()},
                    "runs": [{"dir": s.name.split("/", 1)[1], "label": s.label, "seed": s.config["seed"]} for s in specs[e.name]]}
        (Path(out) / e.name / "experiment.json").write_text(json.dumps(manifest, indent=1))
    suite = Path(out) / "suite.json"
    record = json.loads(suite.read_text()) if suite.is_file() else {}
    record[" ".join(names)] = {"seconds": round(seconds, 1), "workers": workers, "seeds": seeds, "extra": list(extra)}
    suite.write_text(json.dumps(record, indent=1))
    return seconds


def parse_names(names: list[str]) -> list[str]:
    """Experiment names from the command line: ``all`` is the tabular suite a-f."""
    if not names:
        raise ValueError(f"name experiments to run: {', '.join(EXPERIMENTS)} or all")
    out = []
    for n in names:
        if n == "all":
            out += [e.name for e in EXPERIMENTS.values() if e.tabular]
        elif n in EXPERIMENTS:
            out.append(n)
        else:
            raise ValueError(f"unknown experiment {n!r}; valid: {', '.join(EXPERIMENTS)}, all")
    return list(dict.fromkeys(out))


def _names(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@attrs.frozen
class ClaimsOptions:
    names: list[str] = attrs.field(converter=_names)
    """Experiments to run: a list of a-g (names=[a,c]), or all (the tabular suite a-f)."""
    out: str = "runs/claims"
    """Output directory (each experiment's runs go to OUT/<experiment>/)."""
    workers: int = attrs.field(default=2, validator=integer(1))
    """Worker processes."""
    seeds: int | None = attrs.field(default=None, validator=attrs.validators.optional(integer(2)))
    """Seeds per setting (default: each experiment's, 10; g: 5)."""
    report: str | None = None
    """Then build the report of every experiment under ``out`` into this folder."""


def main(argv: list[str] | None = None) -> list[Row]:
    import experiments.claims as package

    doc = package.__doc__ + "\nexperiments:\n" + "\n".join(f"  {e.name}  {e.title}" for e in EXPERIMENTS.values())
    args, overrides = parse_args(argv, ClaimsOptions, "python -m experiments.claims", doc, overrides=True)
    extra = tuple(overrides)
    try:
        names = parse_names(args.names)
    except ValueError as e:
        fail(f"names: {e}")

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} jobs", end="" if done < total else "\n", file=sys.stderr, flush=True)

    try:
        seconds = run_experiments(names, args.out, args.workers, args.seeds, extra, progress)
    except (ConfigError, HydraException) as e:  # a bad override: say which, without a traceback
        fail(str(e))
    # Imported here: worker processes need not import matplotlib.
    from experiments.claims.report import build, load_experiment

    if args.report:  # every experiment under out, not only these
        rows = build(Path(args.out), Path(args.report))
    else:
        rows = [row for n in names for row in ASSESS[n](load_experiment(Path(args.out) / n))]
    print("\n".join(f"({r.experiment}) {r.claim}: {r.ours} -> {r.holds}" for r in rows))
    print(f"\n{', '.join(names)}: {seconds:.0f} s wall, {args.workers} worker(s); report: "
          + (f"{Path(args.report) / 'README.md'}" if args.report else
             f"python -m experiments.claims.report runs={args.out} out=docs/report"))
    return rows


if __name__ == "__main__":
    main()
