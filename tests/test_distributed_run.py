"""Two processes from the command line (accelerate launch, gloo on the CPU): a tiny-qwen3 run
trains, writes one set of events, keeps identical replicas (HA-DW belief, weights) at every
step, resumes exactly from its checkpoint; what cannot run on several processes is refused."""

import math
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from experiments.checkpoint import list_checkpoints, load_latest  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

CONFIG = ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m experiments.run args``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG),
           "--num_processes", str(processes), "--main_process_port", str(free_port()), "-m", "experiments.run", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def tiny_args(tmp_path, *extra: str) -> list[str]:
    """The item-5 command, small: level-1 problems after a short warm start (~20% right, so groups carry signal)."""
    return ["policy=tiny-qwen3", "env=arithmetic", "algo=grpo_hadw", f"policy.model_path={tmp_path / 'cache'}",
            "env.levels=[1]", "policy.warm_start.levels=[1]", "policy.warm_start.steps=60",
            "policy.warm_start.batch_size=32", "policy.warm_start.lr=1e-2", "policy.max_new_tokens=8",
            "train.steps=4", "train.prompts_per_step=5", "train.group_size=4", "train.checkpoint_every=2",
            "train.eval_every=2", "eval.max_problems=6", "eval.n=2", "train.progress=false",
            f"train.log_dir={tmp_path / 'runs'}", *extra]


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def same_history(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(
        x[k] == y[k] or (math.isnan(x[k]) and math.isnan(y[k])) for k in x) for x, y in zip(a, b))


def test_two_process_run_trains_writes_once_keeps_replicas_equal_and_resumes(tmp_path):
    full = launch(*tiny_args(tmp_path, "train.run_name=full"))
    assert full.returncode == 0, full.stderr[-4000:]
    assert "4 steps, seed 0" in full.stdout and "2 processes" in full.stdout
    assert full.stdout.count("run directory:") == 1  # the summary is printed once
    run = tmp_path / "runs" / "full"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # one set of events
    values = scalars(run)
    assert [s for s, _ in values["hadw/belief"]] == [1, 2, 3, 4]
    assert values["processes/state_diff"] == [(s, 0.0) for s in (1, 2, 3, 4)]  # identical replicas every step
    beliefs = [v for _, v in values["hadw/belief"]]
    assert len(set(beliefs)) > 1  # the belief moved
    assert any(v > 0 for _, v in values["loss/grad_norm"])  # it trained
    assert (run / "model" / "config.json").is_file()
    history = load_latest(run)[1]["history"]
    assert [h["hadw/belief"] for h in history] == pytest.approx(beliefs)

    # the run died after step 2: resume on two processes continues exactly
    part = tmp_path / "runs" / "part"
    shutil.copytree(run, part, ignore=shutil.ignore_patterns("events.*", "model"))
    list_checkpoints(part)[-1].unlink()
    resumed = launch(f"resume={part}")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed" in resumed.stderr and "(step 2)" in resumed.stderr
    path, state = load_latest(part)
    assert path.name == "step_000004.pt" and same_history(state["history"], history)
    saved = load_latest(run)[1]
    for name, weight in saved["policy"].items():
        assert torch.equal(weight, state["policy"][name]), name  # same weights as the uninterrupted run
    assert torch.equal(saved["process_generators"], state["process_generators"])

    # one process cannot continue a two-process run's sampling streams
    single = subprocess.run([sys.executable, "-m", "experiments.run", f"resume={part}", "train.steps=6"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert single.returncode == 2 and "written by 2 process(es)" in single.stderr


def test_two_processes_refuse_a_single_process_policy(tmp_path):
    out = launch("algo=grpo", "train.steps=2", f"train.log_dir={tmp_path}")
    assert out.returncode != 0
    assert out.stderr.count("error: policy=tabular: this policy runs in one process only") == 1  # said once
    assert not any(tmp_path.iterdir())  # refused before anything was written
