"""Faults a user meets, run as the user runs them (a subprocess of ``experiments.run``, the
fault injected by ``faulty_run.py`` or done to the run directory), and what the program did
and kept: Ctrl-C at any point of a step, diverging training, kills around the export,
damaged and foreign checkpoints, a live run directory, an edited config, bad values, a full
disk and an unwritable log folder."""

from __future__ import annotations

import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments.training.checkpoint import list_checkpoints, read_checkpoint, save_checkpoint
from tests.conftest import ROOT, one_error_line, run_cli

pytestmark = pytest.mark.slow  # the program in subprocesses: python -m pytest -m 'not slow' skips them

FAULTY = Path(__file__).with_name("faulty_run.py")
TABULAR = ["algo=grpo_hadw", "train.steps=12", "train.checkpoint_every=4", "train.progress=false"]


def faulty(fault: str, *args: str, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAULT": fault}
    return subprocess.run([sys.executable, str(FAULTY), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, **popen)


def final_state(run_dir: Path) -> dict:
    return read_checkpoint(list_checkpoints(run_dir)[-1])


def same_history(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(
        x[k] == y[k] or (math.isnan(x[k]) and math.isnan(y[k])) for k in x) for x, y in zip(a, b))


def model_files(run_dir: Path) -> dict[str, bytes]:
    model = run_dir / "model"
    return {str(p.relative_to(model)): p.read_bytes() for p in sorted(model.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- Ctrl-C, exactly resumed

@pytest.fixture(scope="module")
def tabular_full(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("full")
    out = run_cli(*TABULAR, f"train.log_dir={root}", "train.run_name=full")
    assert out.returncode == 0, out.stderr
    return root / "full"


@pytest.mark.parametrize("where", ["sample", "score", "update"])
def test_sigint_during_a_step_saves_that_whole_step_and_resumes_exactly(tmp_path, tabular_full, where):
    out = faulty(f"sigint:{where}:6", *TABULAR, f"train.log_dir={tmp_path}", "train.run_name=part")
    assert out.returncode == 130, out.stderr
    assert "Traceback" not in out.stderr
    assert "checkpoint step_000006.pt written after step 6; continue with: python -m experiments.run " \
           f"resume={tmp_path / 'part'}" in out.stderr
    assert [p.name for p in list_checkpoints(tmp_path / "part")] == ["step_000004.pt", "step_000006.pt"]
    assert not (tmp_path / "part" / "model").exists()  # interrupted: not exported
    resumed = run_cli(f"resume={tmp_path / 'part'}", "train.progress=false")
    assert resumed.returncode == 0, resumed.stderr
    assert same_history(final_state(tmp_path / "part")["history"], final_state(tabular_full)["history"])
    assert model_files(tmp_path / "part") == model_files(tabular_full)  # bit-identical weights


def test_sigint_sent_from_outside_at_any_moment_resumes_exactly(tmp_path, tabular_full):
    """A real Ctrl-C from another process, at whatever point of a step it lands."""
    common = ["algo=grpo_hadw", "train.steps=400", "train.checkpoint_every=100", "train.progress=false"]
    full = run_cli(*common, f"train.log_dir={tmp_path}", "train.run_name=full")
    assert full.returncode == 0, full.stderr
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *common, f"train.log_dir={tmp_path}",
                             "train.run_name=part"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = tmp_path / "part" / "checkpoints" / "step_000100.pt"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the run ended before the signal arrived (a very fast machine)")
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert run_cli(f"resume={tmp_path / 'part'}", "train.progress=false").returncode == 0
    assert same_history(final_state(tmp_path / "part")["history"], final_state(tmp_path / "full")["history"])
    assert model_files(tmp_path / "part") == model_files(tmp_path / "full")


@pytest.fixture(scope="module")
def llm_args(tmp_path_factory) -> list[str]:
    cache = tmp_path_factory.mktemp("tiny-cache")
    """A few-step tiny-qwen3 run on level-1 problems after a short warm start (some answers right:
    groups carry a gradient)."""
    return ["policy=tiny-qwen3", "env=arithmetic", f"policy.model_path={cache}", "env.levels=[1]",
            "policy.warm_start.levels=[1]", "policy.warm_start.steps=60", "policy.warm_start.batch_size=32",
            "policy.warm_start.lr=1e-2", "policy.max_new_tokens=8", "train.steps=4", "train.prompts_per_step=4",
            "train.group_size=4", "train.checkpoint_every=2", "train.eval_every=0", "train.progress=false",
            "optim.lr=1e-3", "env.num_problems=64", "env.heldout=8"]


def test_llm_run_interrupted_in_each_phase_resumes_with_the_same_prompts_and_weights(tmp_path, llm_args):
    full = run_cli(*llm_args, f"train.log_dir={tmp_path}", "train.run_name=full", timeout=600)
    assert full.returncode == 0, full.stderr
    for where in ("sample", "score", "update"):
        name = f"part-{where}"
        out = faulty(f"sigint:{where}:3", *llm_args, f"train.log_dir={tmp_path}", f"train.run_name={name}")
        assert out.returncode == 130 and "written after step 3" in out.stderr, out.stderr
        resumed = run_cli(f"resume={tmp_path / name}", timeout=600)
        assert resumed.returncode == 0, resumed.stderr
        assert same_history(final_state(tmp_path / name)["history"], final_state(tmp_path / "full")["history"]), where
        assert model_files(tmp_path / name) == model_files(tmp_path / "full"), where


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path):
    """The first Ctrl-C asks for the step to finish; a second one (here: sent while the step
    still samples) stops at once, and the last periodic checkpoint stands."""
    script = ("import os, signal\n"
              "from experiments.training.guards import InterruptGuard\n"
              "with InterruptGuard(announce=False) as g:\n"
              "    os.kill(os.getpid(), signal.SIGINT)\n"
              "    assert g.requested()\n"
              "    try:\n"
              "        os.kill(os.getpid(), signal.SIGINT)\n"
              "    except KeyboardInterrupt:\n"
              "        print('stopped at once')\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "stopped at once", out.stderr


# ---------------------------------------------------------------- diverging training

def test_a_diverging_llm_run_stops_naming_the_step_and_exports_nothing(tmp_path, llm_args):
    out = run_cli(*llm_args, "optim.lr=1e6", "train.steps=6", "train.checkpoint_every=1",
                  f"train.log_dir={tmp_path}", "train.run_name=r", timeout=600)
    assert out.returncode == 1, out.stderr
    line = one_error_line(out.stderr)
    assert re.match(r"error: step (\d+): non-finite (loss|gradient norm|weights)", line), line
    step = int(re.match(r"error: step (\d+)", line).group(1))
    assert not (tmp_path / "r" / "model").exists()
    kept = list_checkpoints(tmp_path / "r")
    assert kept and kept[-1].name == f"step_{step - 1:06d}.pt" and f"kept: {kept[-1]}" in line
    for path in kept:  # every checkpoint kept holds finite weights
        assert all(torch.isfinite(v).all() for v in read_checkpoint(path)["policy"].values())


@pytest.mark.parametrize("name, refused", [("sgd", "1e+300 > 3.4e+38"), ("adam", "1e+301 > 3.4e+38")])
def test_a_learning_rate_that_overflows_the_weights_is_refused_at_start(tmp_path, name, refused):
    out = run_cli(*TABULAR, f"optim.name={name}", "optim.lr=1e300", f"train.log_dir={tmp_path}")
    assert out.returncode == 2
    assert one_error_line(out.stderr) == (f"error: optim.lr: 1e+300 overflows the weights' float32 inside the {name} "
                                         f"update ({refused})")
    assert not any(tmp_path.iterdir())


def test_non_finite_weights_stop_the_run_in_either_mode(tmp_path):
    for mode in ("stop", "skip"):
        out = faulty("nan:weights:3", *TABULAR, f"train.on_nonfinite={mode}", "train.checkpoint_every=1",
                     f"train.log_dir={tmp_path}", f"train.run_name={mode}")
        assert out.returncode == 1
        line = one_error_line(out.stderr)
        assert line.startswith("error: step 3: non-finite weights (1 of 4,096 values) after the update"), line
        assert list_checkpoints(tmp_path / mode)[-1].name == "step_000002.pt"


def test_on_nonfinite_stop_keeps_the_last_good_checkpoint(tmp_path):
    out = faulty("nan:loss:3", *TABULAR, "train.checkpoint_every=1", f"train.log_dir={tmp_path}", "train.run_name=r")
    assert out.returncode == 1
    line = one_error_line(out.stderr)
    assert line.startswith("error: step 3: non-finite loss (nan); the update was not applied"), line
    assert line.endswith(f"kept: {tmp_path / 'r' / 'checkpoints' / 'step_000002.pt'} (resume={tmp_path / 'r'} continues "
                         "from it)")
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step_000001.pt", "step_000002.pt"]
    assert not (tmp_path / "r" / "model").exists()


def test_on_nonfinite_skip_drops_the_update_counts_it_and_goes_on(tmp_path):
    out = faulty("nan:loss:3", *TABULAR, "train.on_nonfinite=skip", "train.checkpoint_every=1",
                 "train.keep_checkpoints=20", f"train.log_dir={tmp_path}", "train.run_name=r")
    assert out.returncode == 0, out.stderr
    states = {int(p.name[5:11]): read_checkpoint(p) for p in list_checkpoints(tmp_path / "r")}
    history = states[12]["history"]
    assert [h["train/skipped_updates"] for h in history] == [0, 0, 1] + [0] * 9
    assert torch.equal(states[3]["policy"]["logits"], states[2]["policy"]["logits"])  # step 3 changed nothing
    assert not torch.equal(states[4]["policy"]["logits"], states[3]["policy"]["logits"])
    assert states[3]["engine"]["optimizer"]["state"][0]["step"] == states[2]["engine"]["optimizer"]["state"][0]["step"]
    assert (tmp_path / "r" / "model" / "table.pt").is_file()


def test_on_nonfinite_skip_stops_after_too_many_in_a_row(tmp_path):
    out = faulty("nan:loss:3+", *TABULAR, "train.on_nonfinite=skip", "train.max_skipped_in_a_row=2",
                 "train.checkpoint_every=1", f"train.log_dir={tmp_path}", "train.run_name=r")
    assert out.returncode == 1
    assert one_error_line(out.stderr).startswith("error: step 4: non-finite loss or gradient in 2 steps in a row")
    assert list_checkpoints(tmp_path / "r")[-1].name == "step_000003.pt"  # step 3: skipped, but whole and finite


# ---------------------------------------------------------------- the export

def test_killed_before_the_export_resume_writes_the_model(tmp_path, tabular_full):
    out = faulty("kill:export:0", *TABULAR, f"train.log_dir={tmp_path}", "train.run_name=r")
    assert out.returncode == -signal.SIGKILL
    assert list_checkpoints(tmp_path / "r")[-1].name == "step_000012.pt" and not (tmp_path / "r" / "model").exists()
    resumed = run_cli(f"resume={tmp_path / 'r'}")
    assert resumed.returncode == 0 and "without its model: wrote" in resumed.stderr, resumed.stderr
    assert model_files(tmp_path / "r") == model_files(tabular_full)
    again = run_cli(f"resume={tmp_path / 'r'}")
    assert again.returncode == 0 and "nothing to train" in again.stderr


def test_killed_mid_export_leaves_no_model_and_resume_writes_a_whole_one(tmp_path, llm_args):
    out = faulty("kill:save_model:0", *llm_args, "train.steps=2", f"train.log_dir={tmp_path}", "train.run_name=r")
    assert out.returncode == -signal.SIGKILL
    run_dir = tmp_path / "r"
    assert not (run_dir / "model").exists()  # the partial export lies in a temporary folder only
    assert run_cli(f"resume={run_dir}", timeout=600).returncode == 0
    assert not (run_dir / ".model.tmp").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run_dir / "model")  # whole: loads


# ---------------------------------------------------------------- checkpoints that lie

def flip_a_byte_that_still_loads(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 3, len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            torch.load(path, weights_only=False)
            return
        except Exception:  # noqa: BLE001 - looking for a flip torch.load does not notice
            continue
    raise AssertionError("no byte flip that still loads")


def test_a_flipped_byte_is_caught_by_the_checksum_and_the_previous_checkpoint_used(tmp_path, tabular_full):
    run_dir = tmp_path / "r"
    assert run_cli(*TABULAR, f"train.log_dir={tmp_path}", "train.run_name=r").returncode == 0
    shutil.rmtree(run_dir / "model")
    newest = list_checkpoints(run_dir)[-1]
    flip_a_byte_that_still_loads(newest)
    resumed = run_cli(f"resume={run_dir}", "train.progress=false")
    assert resumed.returncode == 0, resumed.stderr
    assert f"skipping checkpoint {newest}: damaged: its bytes do not match the SHA-256" in resumed.stderr
    assert "from step_000008.pt (step 8)" in resumed.stderr
    assert model_files(run_dir) == model_files(tabular_full)


def test_a_checkpoint_of_another_model_is_skipped_and_with_none_left_the_error_names_the_files(tmp_path):
    run_dir = tmp_path / "r"
    assert run_cli(*TABULAR, "train.steps=4", f"train.log_dir={tmp_path}", "train.run_name=r").returncode == 0
    other = tmp_path / "other"
    assert run_cli(*TABULAR, "train.steps=4", "env.num_answers=9", f"train.log_dir={tmp_path}",
                   "train.run_name=other").returncode == 0
    foreign = read_checkpoint(list_checkpoints(other)[-1])
    save_checkpoint(run_dir, 6, foreign, keep=5)  # newer, and its checksum is right
    resumed = run_cli(f"resume={run_dir}", "train.steps=6", "train.progress=false")
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"skipping checkpoint \S+step_000006\.pt: does not fit this run's model", resumed.stderr)
    assert "from step_000004.pt (step 4)" in resumed.stderr

    only_foreign = tmp_path / "only"
    shutil.copytree(run_dir, only_foreign)
    for path in list_checkpoints(only_foreign):
        path.unlink()
    save_checkpoint(only_foreign, 6, foreign, keep=5)
    refused = run_cli(f"resume={only_foreign}")
    assert refused.returncode == 2
    assert one_error_line(refused.stderr) == (f"error: resume: no usable checkpoint in {only_foreign / 'checkpoints'} "
                                             "(tried step_000006.pt; see the warnings above)")


# ---------------------------------------------------------------- values and the disk

@pytest.mark.parametrize("name", ["123", "nan", "1e3", "true"])
def test_run_name_is_text_whatever_yaml_makes_of_it(tmp_path, name):
    out = run_cli(f"train.log_dir={tmp_path}", f"train.run_name={name}", "train.steps=2", "train.progress=false")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / name / "config.yaml").is_file()


def test_min_new_tokens_above_max_new_tokens_is_refused(tmp_path):
    out = run_cli("policy=tiny-qwen3", "policy.min_new_tokens=20", "policy.max_new_tokens=10",
                  f"train.log_dir={tmp_path}")
    assert out.returncode == 2
    assert one_error_line(out.stderr) == "error: policy.min_new_tokens: must be <= max_new_tokens (10), got 20"
    assert not any(tmp_path.iterdir())


def test_an_unwritable_log_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = run_cli(f"train.log_dir={blocker / 'runs'}", "train.steps=2")
    assert out.returncode == 2
    assert one_error_line(out.stderr) == f"error: {blocker / 'runs'}: Not a directory"


def limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_is_one_line_and_leaves_no_temporary_files(tmp_path):
    """Files over a size limit fail to write as on a full disk (EFBIG for ENOSPC): the
    checkpoint (~0.2 MB here) cannot be written; config and events (a few kB) can."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "experiments.run", "train.steps=2", "train.samples_every=0",
                          f"train.log_dir={tmp_path}", "train.run_name=r", "env.num_prompts=2000"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                         preexec_fn=limit_file_size(64_000))
    assert out.returncode == 2, out.stderr
    line = one_error_line(out.stderr)
    assert line == (f"error: {tmp_path / 'r' / 'checkpoints' / 'step_000002.pt'}: File too large (disk full or over "
                    "a size limit; nothing partial was left)"), line
    leftovers = [p.name for p in (tmp_path / "r").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [] and not list_checkpoints(tmp_path / "r")
