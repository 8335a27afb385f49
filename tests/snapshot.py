"""What the program computes, through every entry point, as one JSON: ``python tests/snapshot.py OUT.json``.

Runs the command-line entry points as a user does (subprocesses, from the repository root)
and records exact numbers from what they write: every run's history from its final
checkpoint (float64, as the trainer keeps it), the final scalars of event files written by
batched and sweep runs, evaluation and report files. Nothing here imports the project, so
the same script runs on two checkouts of different layouts: ``diff`` of their outputs shows
whether a change of the code's arrangement changed behaviour.

    git worktree add /tmp/before <commit>
    (cd /tmp/before && python tests/snapshot.py /tmp/before.json)
    python tests/snapshot.py /tmp/after.json && python tests/snapshot.py --compare /tmp/before.json /tmp/after.json
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABULAR = ["train.steps=25", "train.progress=false", "train.checkpoint_every=0"]
NEW = (ROOT / "experiments" / "cli.py").is_file()  # one KEY=VALUE convention (the house layout), else the old flags
ALGOS = ["grpo", "grpo_hadw", "dr_grpo", "dr_grpo_hadw", "gspo", "gspo_hadw", "dapo", "dapo_hadw", "cispo",
         "cispo_hadw", "grpo_focal", "grpo_agrae"]


def cli(module: str, *args: str, cwd: Path = ROOT, timeout: float = 1800) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"python -m {module} {' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return out.stdout


def history(run_dir: Path) -> list[dict[str, float]]:
    """The run's history from its newest checkpoint (exact floats)."""
    import torch

    newest = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1]
    return torch.load(newest, map_location="cpu", weights_only=False)["history"]


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every scalar tag of a run's event files: its values in step order (float32 as written)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in sorted(events.Tags()["scalars"])
            if not tag.startswith(("time/", "speed/"))}


def clean(value):
    """JSON-safe: NaN and inf as strings, so that a comparison sees them."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def without_clock(text: str) -> str:
    """Output lines that carry no wall-clock times or run-directory names."""
    keep = []
    for line in text.splitlines():
        if any(w in line for w in (" s wall", "directory:", ", 1.", "steps, seed")) or line.strip().endswith(" s)"):
            continue
        keep.append(line)
    return "\n".join(keep)


def snapshot(tmp: Path) -> dict:
    out: dict = {}
    runs = tmp / "runs"
    for algo in ALGOS:  # every preset, one process
        cli("experiments.run", f"algo={algo}", *TABULAR, f"train.log_dir={runs}", f"train.run_name={algo}")
        out[f"run/{algo}"] = history(runs / algo)
    variants = {"minibatches": ["algo=cispo", "train.ppo_epochs=2", "train.minibatches=4", "train.micro_batch_size=64"],
                "kl_sgd": ["algo=grpo_hadw", "algo.kl.beta=0.05", "optim.name=sgd", "optim.lr=2"],
                "beta_bank": ["algo=grpo_focal", "env.difficulty=beta", "env.beta=[0.5,2.0]"],
                "arithmetic_candidates": ["algo=grpo_hadw", "env=arithmetic", "env.num_problems=64"],
                "schedule": ["algo=gspo_hadw", "optim.warmup_steps=3", "optim.schedule=cosine", "seed=3"]}
    for name, args in variants.items():
        cli("experiments.run", *args, *TABULAR, f"train.log_dir={runs}", f"train.run_name={name}")
        out[f"run/{name}"] = history(runs / name)
    # resume: 10 steps, then 15 more from the checkpoint
    cli("experiments.run", "algo=grpo_hadw", "train.steps=10", "train.progress=false", f"train.log_dir={runs}",
        "train.run_name=resumed")
    cli("experiments.run", f"resume={runs / 'resumed'}", "train.steps=25")
    out["run/resumed"] = history(runs / "resumed")
    # arena and study print their comparisons
    arena = cli("experiments.run", "arena=[grpo,grpo_hadw]", *TABULAR, f"train.log_dir={tmp / 'arena'}")
    out["arena/stdout"] = without_clock(arena)
    out["study/stdout"] = (cli("experiments.compare.study", "algos=[grpo,grpo_hadw]", "seeds=2", "train.steps=20") if NEW
                           else cli("experiments.study", "--algos", "grpo", "grpo_hadw", "--seeds", "2", "--", "train.steps=20"))
    # a Hydra sweep: its summary table
    sweep = cli("experiments.run", "-m", "seed=0,1", "algo=grpo,grpo_hadw", *TABULAR, f"train.log_dir={tmp / 'sweep'}")
    out["sweep/stdout"] = without_clock(sweep)
    # the claims suite (batched simulator and single runs) and its report
    claims = tmp / "claims"
    if NEW:
        cli("experiments.claims", "names=[a,b,c,d,e,f]", f"out={claims}", "seeds=2", "train.steps=12")
    else:
        cli("experiments.claims", "a", "b", "c", "d", "e", "f", "--out", str(claims), "--seeds", "2", "--", "train.steps=12")
    for run_dir in sorted(p.parent for p in claims.glob("*/*/config.yaml")):
        out[f"claims/{run_dir.parent.name}/{run_dir.name}"] = scalars(run_dir)
    if NEW:
        cli("experiments.claims.report", f"runs={claims}", f"out={tmp / 'report'}")
    else:
        cli("experiments.report", "--runs", str(claims), "--out", str(tmp / "report"))
    out["report/README.md"] = [line for line in (tmp / "report" / "README.md").read_text().splitlines()
                               if "seconds" not in line and " s wall" not in line and "python -m experiments" not in line]
    # evaluation of a trained run
    cli("experiments.evaluate", f"run={runs / 'grpo_hadw'}", "eval.n=4", f"{'out' if NEW else 'eval.out'}={tmp / 'eval'}")
    record = json.loads((tmp / "eval" / "eval.json").read_text())
    out["evaluate/metrics"] = record["metrics"]
    # a language model: tiny-qwen3 on arithmetic, two steps, held-out evaluation, then its evaluation
    llm = ["policy=tiny-qwen3", "env=arithmetic", "algo=grpo_hadw", f"policy.model_path={tmp / 'tiny'}",
           "policy.warm_start.steps=0", "policy.max_new_tokens=6", "train.steps=3", "train.prompts_per_step=3",
           "train.group_size=4", "train.eval_every=2", "eval.max_problems=5", "eval.n=1", "train.progress=false",
           f"train.log_dir={runs}", "train.run_name=llm"]
    cli("experiments.run", *llm)
    out["run/llm"] = history(runs / "llm")
    cli("experiments.run", *llm[:-1], "train.run_name=llm_kl_micro", "algo.kl.beta=0.1", "train.micro_batch_size=5",
        "train.minibatches=2")
    out["run/llm_kl_micro"] = history(runs / "llm_kl_micro")
    cli("experiments.evaluate", f"run={runs / 'llm'}", "eval.n=2", "eval.max_problems=6",
        f"{'out' if NEW else 'eval.out'}={tmp / 'eval_llm'}")
    out["evaluate_llm/metrics"] = json.loads((tmp / "eval_llm" / "eval.json").read_text())["metrics"]
    return clean(out)


def stable(value):
    """Values with temporary folder names masked (a sweep's table names its log_dir)."""
    if isinstance(value, str):
        return re.sub(r"/tmp/tmp[\w]+", "<tmp>", value)
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def compare(before: dict, after: dict) -> list[str]:
    """Every key whose value differs (or exists on one side only)."""
    return [k for k in sorted(set(before) | set(after)) if stable(before.get(k)) != stable(after.get(k))]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--compare"]:
        before, after = (json.loads(Path(p).read_text()) for p in argv[1:3])
        differ = compare(before, after)
        print(f"{len(before)} entries; {len(differ)} differ" + "".join(f"\n  {k}" for k in differ))
        return 1 if differ else 0
    with tempfile.TemporaryDirectory() as tmp:
        result = snapshot(Path(tmp))
    Path(argv[0]).write_text(json.dumps(result, indent=0, sort_keys=True))
    print(f"{len(result)} entries written to {argv[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
