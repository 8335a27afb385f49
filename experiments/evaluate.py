"""Evaluate a policy on a benchmark: ``python -m experiments.evaluate [KEY=VALUE ...]``.

    python -m experiments.evaluate run=runs/grpo_hadw-bandit-s0-...            # a trained run
    python -m experiments.evaluate run=RUN_DIR benchmark=heldout eval.n=8 "eval.k=[1,4,8]"
    python -m experiments.evaluate policy=tiny-qwen3 benchmark=math500 eval.max_problems=50
    python -m experiments.evaluate run=RUN_DIR benchmark=/data/my_problems.jsonl

Writes eval.json (every number, the command and the config), eval.md (the tables) and
samples.jsonl (problem id, completion, extracted answer, reward per response), and prints
the table. Groups: all problems; hard / medium / easy (the task's buckets: MATH levels 4-5
/ 3 / 1-2, the bandit's initial p); each level; each subject (MATH500). Without ``run``, any
other KEY=VALUE builds the policy as for training (policy=..., env=..., policy.temperature=...).
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import attrs

from algorithms import ConfigError
from experiments.cli import fail, parse_args
from experiments.training.build import build_trainer, compose_config
from experiments.training.lifecycle import load_trained
from experiments.evaluation.benchmarks import benchmark_task
from experiments.evaluation.evaluator import EvalParams, evaluate, table
from policies.base import AnswerDistribution

@attrs.frozen
class EvaluateOptions:
    run: str | None = None
    """A trained run's directory: its config and newest checkpoint (no other overrides then)."""
    benchmark: str | None = None
    """heldout (the env's held-out split; default for text policies), train (the env's own
    prompts; default for the tabular policy), a benchmark (rlvr_env.datasets: math500, gsm8k's
    test file, aime24, ...), or a .jsonl path."""
    out: str | None = None
    """Output folder (default: RUN_DIR/eval/<benchmark>, else evals/<policy>-<benchmark>-<time>)."""
    eval: EvalParams = attrs.field(factory=EvalParams)
    """Samples per problem, pass@k / maj@k, problems, batches, bootstrap, seed."""


def policy_to_evaluate(options: EvaluateOptions, overrides: list[str]):
    """(trainer with its policy and task, config, run dir or None)."""
    if options.run is not None:
        if overrides:
            raise ConfigError(f"run: the run's own config is used; cannot also override {', '.join(overrides)}")
        trainer, cfg = load_trained(options.run, field="run")
        return trainer, cfg, Path(options.run)
    cfg = compose_config(*overrides)
    with tempfile.TemporaryDirectory() as tmp:  # build_trainer writes nothing; the dir is only a name
        return build_trainer(cfg, Path(tmp)), cfg, None


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    options, overrides = parse_args(argv, EvaluateOptions, "python -m experiments.evaluate", __doc__, overrides=True)
    params = options.eval
    try:
        trainer, cfg, run_dir = policy_to_evaluate(options, overrides)
        default = "train" if isinstance(trainer.policy, AnswerDistribution) else "heldout"
        name = options.benchmark or default
        task, exact = benchmark_task(name, trainer, cfg)
    except ConfigError as exc:
        fail(str(exc))
    out = options.out
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
