"""A run owns its directory, run as the user runs it: a live run refuses a second run and a
resume (naming its pid), default names started in the same second do not collide, a reused
directory loses an earlier run's events, and resume refuses a config edited since the
checkpoint unless the change is accepted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from experiments.training.checkpoint import list_checkpoints, read_checkpoint
from tests.conftest import ROOT, one_error_line, run_cli
from tests.experiments.training.test_faults import TABULAR

pytestmark = pytest.mark.slow  # the program in subprocesses: python -m pytest -m 'not slow' skips them


def test_a_live_run_refuses_a_second_run_and_a_resume_naming_its_pid(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    live = subprocess.Popen([sys.executable, "-m", "experiments.run", "train.steps=1000000", "train.checkpoint_every=5",
                             f"train.log_dir={tmp_path}", "train.run_name=r", "train.progress=false"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list_checkpoints(tmp_path / "r") and time.monotonic() < deadline:
            time.sleep(0.1)
        for args in ([f"resume={tmp_path / 'r'}"], [f"train.log_dir={tmp_path}", "train.run_name=r"]):
            out = run_cli(*args)
            assert out.returncode == 2
            assert f"is in use by pid {live.pid} on " in one_error_line(out.stderr), out.stderr
    finally:
        live.send_signal(signal.SIGINT)
        live.communicate(timeout=120)
    assert live.returncode == 130
    after = run_cli(f"resume={tmp_path / 'r'}", "train.steps=1")  # the lock died with its process
    assert after.returncode == 0 and "resumed" in after.stderr, after.stderr


def test_a_new_run_in_a_directory_without_checkpoints_still_running_is_refused(tmp_path):
    """Before its first checkpoint a run is live too (the lock, not the checkpoints, says so)."""
    from experiments.training.lock import RunLock

    (tmp_path / "r").mkdir()
    held = RunLock(tmp_path / "r" / "run.lock")
    try:
        out = run_cli(f"train.log_dir={tmp_path}", "train.run_name=r", "train.steps=2")
        assert out.returncode == 2 and f"in use by pid {os.getpid()}" in one_error_line(out.stderr)
    finally:
        held.release()


def test_default_names_started_in_the_same_second_do_not_collide(tmp_path, make_cfg):
    from experiments.training.lifecycle import TrainingRun, new_run_dir

    cfg = make_cfg(f"train.log_dir={tmp_path}", "train.steps=2")
    path = new_run_dir(cfg)
    first, second = TrainingRun.start(cfg, path), TrainingRun.start(cfg, path)  # the same name, as two processes see it
    try:
        assert first.directory.path == path and second.directory.path == path.with_name(path.name + "-1")
        assert second.trainer.run_dir == second.directory.path
    finally:
        first.close()
        second.close()


def test_a_reused_directory_without_checkpoints_loses_the_old_events(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "events.out.tfevents.1.old.0").write_bytes(b"an earlier run's curves")
    out = run_cli(f"train.log_dir={tmp_path}", "train.run_name=r", "train.steps=2", "train.progress=false")
    assert out.returncode == 0 and "removed 1 file(s) of an earlier run" in out.stderr
    assert not (run_dir / "events.out.tfevents.1.old.0").exists()
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1


def test_resume_refuses_a_config_edited_since_the_checkpoint_unless_accepted(tmp_path):
    run_dir = tmp_path / "r"
    assert run_cli(*TABULAR, "train.steps=4", f"train.log_dir={tmp_path}", "train.run_name=r").returncode == 0
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("lr: 0.01", "lr: 0.02"))
    refused = run_cli(f"resume={run_dir}", "train.steps=6")
    assert refused.returncode == 2
    assert one_error_line(refused.stderr) == ("error: resume: the config differs from the one step_000004.pt recorded "
                                             "(optim.lr: 0.01 -> 0.02); resume_accept=[optim.lr] continues with the "
                                             "new values")
    accepted = run_cli(f"resume={run_dir}", "train.steps=6", "resume_accept=[optim.lr]", "train.progress=false")
    assert accepted.returncode == 0, accepted.stderr
    assert "resume from step_000004.pt: accepted optim.lr: 0.01 -> 0.02" in accepted.stderr
    assert "accepted optim.lr: 0.01 -> 0.02" in (run_dir / "resumes.log").read_text()
    assert read_checkpoint(list_checkpoints(run_dir)[-1])["config"]["optim"]["lr"] == 0.02
