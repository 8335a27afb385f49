"""Evaluate a policy on a benchmark: ``python -m experiments.evaluate [KEY=VALUE ...]``.

    python -m experiments.evaluate run=runs/grpo_hadw-bandit-s0-...            # a trained run
    python -m experiments.evaluate run=RUN_DIR benchmark=heldout eval.n=8 "eval.k=[1,4,8]"
    python -m experiments.evaluate policy=tiny-qwen3 benchmark=math500 eval.max_problems=50
    python -m experiments.evaluate run=RUN_DIR benchmark=/data/my_problems.jsonl

Keys:
    run=RUN_DIR        evaluate a trained run: its config, its newest checkpoint
    benchmark=NAME     heldout (the env's held-out split; default for text policies),
                       train (the env's own training prompts; default for the tabular policy,
                       whose table has a row per training prompt only), math500, aime24, aime25,
                       amc2023, minervamath, olympiadbench, gsm8k (its test file), or a .jsonl path
    eval.n=N           samples per problem (default 4); mean@n = pass@1 averaged over them
    eval.k=[1,4]       pass@k (unbiased estimator) and maj@k (majority vote) for each k <= n
    eval.max_problems  evaluate the first M problems only
    eval.batch_prompts problems per sampling call (default 32)
    eval.bootstrap     bootstrap resamples for the 95% intervals (default 1000; 0: none)
    eval.seed          sampling and bootstrap seed (default 0)
    eval.out=DIR       output folder (default: RUN_DIR/eval/<benchmark>, else evals/<policy>-<benchmark>)
    anything else      config overrides as for training (policy=..., env=..., policy.temperature=...)

Writes eval.json (every number, the command and the config), eval.md (the tables) and
samples.jsonl (problem id, completion, extracted answer, reward per response), and prints
the table. Groups: all problems; hard / medium / easy (the task's buckets: MATH levels 4-5
/ 3 / 1-2, the bandit's initial p); each level; each subject (MATH500).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import yaml
from omegaconf import OmegaConf

from algorithms import ConfigError
from algorithms.registry import build_params
from experiments.checkpoint import load_latest
from experiments.config import CONFIG_FILE, build_trainer, compose_config, override_key
from experiments.evaluator import EvalParams, evaluate, table
from policies.base import AnswerDistribution
from rlvr_env.problems import load_jsonl
from rlvr_env.protocol import exact_view
from rlvr_env.tasks import MathTask, resolve_data_file

BENCHMARK_FILES = {"math500": "math500.jsonl", "aime24": "aime24.jsonl", "aime25": "aime25.jsonl",
                   "amc2023": "amc2023.jsonl", "minervamath": "minervamath.jsonl",
                   "olympiadbench": "olympiadbench.jsonl", "gsm8k": "gsm8k_test.jsonl"}


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Our own keys (run, benchmark, eval.*) and the config overrides for everything else."""
    ours, overrides = {}, []
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"expected KEY=VALUE, got {arg!r} (see --help)")
        key = override_key(arg)
        if key in ("run", "benchmark") or key.startswith("eval."):
            ours[key] = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
    return ours, overrides


def eval_params(ours: dict[str, str]) -> tuple[EvalParams, str | None]:
    raw = {k[len("eval."):]: v for k, v in ours.items() if k.startswith("eval.")}
    out = raw.pop("out", None)
    return build_params(EvalParams, {k: yaml.safe_load(v) for k, v in raw.items()}, "eval"), out


def load_policy(ours: dict[str, str], overrides: list[str]):
    """(trainer with its policy and task, config, run dir or None)."""
    if "run" in ours:
        run_dir = Path(ours["run"])
        if not (run_dir / CONFIG_FILE).is_file():
            raise ConfigError(f"run: {run_dir / CONFIG_FILE} not found (run takes a run directory)")
        if overrides:
            raise ConfigError(f"run: the run's own config is used; cannot also override {', '.join(overrides)}")
        cfg = OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG_FILE), resolve=True)
        trainer = build_trainer(cfg, run_dir)
        found = load_latest(run_dir)
        if found is None:
            raise ConfigError(f"run: no readable checkpoint in {run_dir}/checkpoints")
        trainer.load_state_dict(found[1])
        return trainer, cfg, run_dir
    cfg = compose_config(*overrides)
    with tempfile.TemporaryDirectory() as tmp:  # build_trainer writes nothing; the dir is only a name
        return build_trainer(cfg, Path(tmp)), cfg, None


def benchmark_task(name: str, trainer, cfg: dict[str, Any]):
    """The task to evaluate on, and its exact view where exact success probabilities exist."""
    policy, task = trainer.policy, trainer.task
    if name == "train":
        return task, exact_view(task, policy)
    if isinstance(policy, AnswerDistribution):
        raise ConfigError(f"benchmark={name}: the tabular policy has a row per training prompt only; "
                          "evaluate it with benchmark=train")
    if name == "heldout":
        heldout = getattr(task, "heldout", None) or []
        if not heldout:
            raise ConfigError(f"benchmark=heldout: env {cfg['env']['name']!r} keeps no held-out problems "
                              "(set env.heldout, or name a benchmark)")
        return MathTask(heldout, [], seed=0, template=cfg["env"].get("template", "boxed"), name="heldout"), None
    data_dir = cfg["env"].get("data_dir") or os.environ.get("RLVR_DATA_DIR", "../shared/data")
    if name in BENCHMARK_FILES:
        path = resolve_data_file(BENCHMARK_FILES[name], data_dir, "benchmark")
    elif name.endswith(".jsonl"):
        path = resolve_data_file(name, data_dir, "benchmark")
    else:
        raise ConfigError(f"benchmark: unknown {name!r}; valid: heldout, train, {', '.join(BENCHMARK_FILES)}, "
                          "or a .jsonl path")
    return MathTask(load_jsonl(path), [], seed=0, name=path.stem), None


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        raise SystemExit(0)
    try:
        ours, overrides = parse(argv)
        params, out = eval_params(ours)
        trainer, cfg, run_dir = load_policy(ours, overrides)
        default = "train" if isinstance(trainer.policy, AnswerDistribution) else "heldout"
        name = ours.get("benchmark", default)
        task, exact = benchmark_task(name, trainer, cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    label = Path(name).stem
    if out is None:
        out = (run_dir / "eval" / label) if run_dir else Path("evals") / f"{cfg['policy']['name']}-{label}-{datetime.now():%Y%m%d-%H%M%S}"
    out = Path(out)
    result = evaluate(trainer.policy, task, params, exact=exact, progress=True)
    title = f"{label}: {min(len(task), params.max_problems or len(task))} problems x {params.n} samples"
    text = table(result, title)
    out.mkdir(parents=True, exist_ok=True)
    record = {"command": "python -m experiments.evaluate " + " ".join(argv), "benchmark": name,
              "run": str(run_dir) if run_dir else None, "eval": attrs.asdict(params), "config": cfg,
              "metrics": result.metrics}
    (out / "eval.json").write_text(json.dumps(record, indent=1, default=str))
    (out / "eval.md").write_text(text + "\n")
    with open(out / "samples.jsonl", "w") as f:
        for row in result.samples:
            f.write(json.dumps(row) + "\n")
    print(text)
    print(f"\nwritten: {out}/eval.json, eval.md, samples.jsonl")
    return record


if __name__ == "__main__":
    main()
