"""Two processes from the command line (accelerate launch, gloo on the CPU): a tiny-qwen3 run
trains, writes one set of events, keeps identical replicas (HA-DW belief, weights) at every
step, resumes exactly from its checkpoint; with FSDP (the model sharded) the same run trains
like the replicas, resumes and exports; what cannot run on several processes is refused."""

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

from experiments.training.checkpoint import list_checkpoints, load_latest  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

pytestmark = pytest.mark.slow  # subprocess runs and multi-process jobs: python -m pytest -m 'not slow' skips them

CONFIG = ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"
FSDP_CONFIG = ROOT / "configs" / "accelerate" / "fsdp_cpu_2proc.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args: str, processes: int = 2, config=CONFIG, fault: str | None = None,
           path: tuple = ()) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m experiments.run args``
    (``fault``: ``tests/experiments/training/faulty_run.py``'s FAULT, on process 0 only; ``path``:
    further folders on PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (ROOT, *path))), "HYDRA_FULL_ERROR": "0",
           "OMP_NUM_THREADS": "1"}
    program = ["-m", "experiments.run"]
    if fault is not None:
        env.update(FAULT=fault, FAULT_RANK="0")
        program = [str(ROOT / "tests" / "experiments" / "training" / "faulty_run.py")]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--num_processes", str(processes), "--main_process_port", str(free_port()), *program, *args]
    # A session of its own: a Ctrl-C fault signals the launcher and its processes, as a terminal does.
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, start_new_session=True)


def tiny_args(tmp_path, *extra: str, cache=None) -> list[str]:
    """The item-5 command, small: level-1 problems after a short warm start (~20% right, so groups carry signal)."""
    cache = cache or tmp_path / "cache"
    return ["policy=tiny-qwen3", "env=arithmetic", "algo=grpo_hadw", f"policy.model_path={cache}",
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


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """The tiny run on two replicas (DDP-style), once for this module: (its folder, the launch)."""
    base = tmp_path_factory.mktemp("ddp")
    return base, launch(*tiny_args(base, "train.run_name=full"))


def check_two_process_run(out: subprocess.CompletedProcess, run) -> list[dict]:
    """One summary, one set of events, identical replica state every step, a moving belief,
    some training, an exported model; returns the checkpoint's history."""
    assert out.returncode == 0, out.stderr[-4000:]
    assert "4 steps, seed 0" in out.stdout and "2 processes" in out.stdout
    assert out.stdout.count("run directory:") == 1  # the summary is printed once
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
    return history


def check_resume(run, part, history, config=CONFIG) -> None:
    """The run died after step 2: resume on two processes continues exactly (history, weights,
    optimizer state, sampling streams)."""
    shutil.copytree(run, part, ignore=shutil.ignore_patterns("events.*", "model"))
    list_checkpoints(part)[-1].unlink()
    resumed = launch(f"resume={part}", config=config)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed" in resumed.stderr and "(step 2)" in resumed.stderr
    path, state = load_latest(part)
    assert path.name == "step_000004.pt" and same_history(state["history"], history)
    saved = load_latest(run)[1]
    assert saved["policy"] and saved["policy"].keys() == state["policy"].keys()
    for name, weight in saved["policy"].items():
        assert torch.equal(weight, state["policy"][name]), name  # same weights as the uninterrupted run
    moments = saved["engine"]["optimizer"]["state"]
    assert moments and all(torch.equal(v, state["engine"]["optimizer"]["state"][k][n])
                           for k, per in moments.items() for n, v in per.items())
    assert torch.equal(saved["process_generators"], state["process_generators"])


def test_two_process_run_trains_writes_once_keeps_replicas_equal_and_resumes(ddp_run):
    base, full = ddp_run
    run = base / "runs" / "full"
    history = check_two_process_run(full, run)
    check_resume(run, base / "runs" / "part", history)
    part = base / "runs" / "part"

    # one process cannot continue a two-process run's sampling streams
    single = subprocess.run([sys.executable, "-m", "experiments.run", f"resume={part}", "train.steps=6"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert single.returncode == 2 and "written by 2 process(es)" in single.stderr


def test_ctrl_c_stops_every_process_after_the_same_step_and_resumes_exactly(ddp_run):
    """Ctrl-C as a terminal sends it (SIGINT to the launcher and both processes, then the
    launcher's SIGTERM) while step 3 samples: both processes finish step 3, write one
    checkpoint together and stop with exit code 130; two processes then resume exactly."""
    base, full = ddp_run
    assert full.returncode == 0, full.stderr[-4000:]
    part = base / "runs" / "interrupted"
    out = launch(*tiny_args(base, "train.run_name=interrupted"), fault="ctrl-c:sample:3")
    assert "interrupted: checkpoint step_000003.pt written after step 3" in out.stderr, out.stderr[-4000:]
    assert out.stderr.count("interrupted:") == 1 and out.stderr.count("exitcode  : 130") == 2, out.stderr[-4000:]
    assert str(ROOT / "experiments") not in out.stderr  # no traceback of ours (the launcher reports its children)
    assert [p.name for p in list_checkpoints(part)] == ["step_000002.pt", "step_000003.pt"]
    resumed = launch(f"resume={part}")
    assert resumed.returncode == 0 and "(step 3)" in resumed.stderr, [l for l in resumed.stderr.splitlines() if l.startswith("error")]
    saved, state = load_latest(base / "runs" / "full")[1], load_latest(part)[1]
    assert same_history(state["history"], saved["history"])
    for name, weight in saved["policy"].items():
        assert torch.equal(weight, state["policy"][name]), name


def test_fsdp_run_trains_like_the_replicas_resumes_and_exports(tmp_path, ddp_run):
    from transformers import AutoModelForCausalLM

    # micro-batches of 5: the processes hold 12 and 8 responses, so 3 and 2 passes (+1 idle pass)
    out = launch(*tiny_args(tmp_path, "train.run_name=full", "train.micro_batch_size=5", cache=ddp_run[0] / "cache"),
                 config=FSDP_CONFIG)
    run = tmp_path / "runs" / "full"
    history = check_two_process_run(out, run)
    saved = load_latest(run)[1]
    assert next(iter(saved["engine"]["optimizer"]["state"])).startswith("causal.model.")  # FSDP's full optimizer state
    replicas = load_latest(ddp_run[0] / "runs" / "full")[1]
    assert [h["hadw/belief"] for h in history] == [h["hadw/belief"] for h in replicas["history"]]
    assert [h["loss/grad_norm"] for h in history] == pytest.approx([h["loss/grad_norm"] for h in replicas["history"]],
                                                                  rel=1e-5, abs=1e-7)
    for name, weight in replicas["policy"].items():  # the same training as two replicas, up to summation order
        torch.testing.assert_close(saved["policy"][name], weight, atol=1e-6, rtol=0)
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    exported = dict(model.named_parameters())
    assert exported.keys() == saved["policy"].keys()
    for name, weight in saved["policy"].items():
        assert torch.equal(exported[name].detach(), weight), name  # the export is the last checkpoint's weights
    check_resume(run, tmp_path / "runs" / "part", history, config=FSDP_CONFIG)


def test_two_processes_refuse_a_single_process_policy(tmp_path):
    out = launch("algo=grpo", "train.steps=2", f"train.log_dir={tmp_path}")
    assert out.returncode != 0
    assert out.stderr.count("error: policy=tabular: this policy runs in one process only") == 1  # said once
    assert not any(tmp_path.iterdir())  # refused before anything was written
