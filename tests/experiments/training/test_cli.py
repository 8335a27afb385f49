"""Subprocess runs of ``python -m experiments.run``: smoke, TensorBoard events, errors, resume."""

import pytest
import re

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # subprocess runs and multi-process jobs: python -m pytest -m 'not slow' skips them

REQUIRED_TAGS = {
    "accuracy/all", "accuracy/hard", "accuracy/medium", "accuracy/easy",
    "accuracy/batch", "accuracy/batch_hard", "accuracy/batch_medium", "accuracy/batch_easy",
    "reward/mean", "groups/degenerate_frac", "hadw/belief", "hadw/eta",
    "phi/correct", "phi/incorrect", "bias/hard", "bias/medium", "bias/easy",
}


def scalars(run_dir):
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def only_run(log_dir):
    runs = [p for p in log_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_default_run_writes_events_config_and_summary(tmp_path):
    out = run_cli("train.steps=30", f"train.log_dir={tmp_path}", "train.checkpoint_every=10")
    assert out.returncode == 0, out.stderr
    assert "grpo_hadw on bandit: 30 steps" in out.stdout
    assert re.search(r"A_hat - A, hard .*-?\d\.\d{4}", out.stdout)
    run_dir = only_run(tmp_path)
    assert (run_dir / "config.yaml").is_file()
    tags = scalars(run_dir)
    assert REQUIRED_TAGS <= set(tags), REQUIRED_TAGS - set(tags)
    assert [s for s, _ in tags["reward/mean"]] == list(range(1, 31))
    assert all(0.0 <= v <= 1.0 for _, v in tags["accuracy/all"])


def test_unknown_algo_lists_the_valid_ones(tmp_path):
    out = run_cli("algo=nope", f"train.log_dir={tmp_path}")
    assert out.returncode != 0
    assert "Could not find 'algo/nope'" in out.stderr and "grpo_hadw" in out.stderr
    assert not any(tmp_path.iterdir())


def test_bad_hyperparameter_fails_at_start(tmp_path):
    out = run_cli("reweight.lambda_scale=-1", f"train.log_dir={tmp_path}")
    assert out.returncode == 2
    assert "reweight.lambda_scale: must be > 0.0, got -1" in out.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_resume_continues_to_the_same_numbers(tmp_path):
    common = ["algo=grpo", "train.steps=20", "train.checkpoint_every=10", "train.progress=false"]
    full = run_cli(*common, f"train.log_dir={tmp_path / 'a'}", "train.run_name=full")
    part = run_cli(*common, f"train.log_dir={tmp_path / 'b'}", "train.run_name=part")
    assert full.returncode == 0 and part.returncode == 0, full.stderr + part.stderr
    run_dir = tmp_path / "b" / "part"
    (run_dir / "checkpoints" / "step_000020.pt").unlink()

    refused = run_cli(f"resume={run_dir}", "algo=grpo_hadw")
    assert refused.returncode == 2 and "cannot change algo=grpo_hadw" in refused.stderr

    resumed = run_cli(f"resume={run_dir}", "train.progress=false")
    assert resumed.returncode == 0, resumed.stderr
    assert "from step_000010.pt (step 10)" in resumed.stderr
    table = lambda text: text[text.index("metric"):text.index("run directory")]  # noqa: E731
    assert table(resumed.stdout) == table(full.stdout)
    a, b = scalars(tmp_path / "a" / "full"), scalars(run_dir)
    assert a["accuracy/all"] == b["accuracy/all"]  # steps 11-20 purged and rewritten identically
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # one file, steps 1..20 in order


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_continue(tmp_path):
    """SIGINT mid-run: a checkpoint, a one-line message with the resume command, exit 130, no
    traceback; resuming leaves one event file that TensorBoard reads without purge warnings."""
    import logging
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    run_dir = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", "algo=grpo", "train.steps=100000",
                             "train.checkpoint_every=5", f"train.log_dir={tmp_path}", "train.run_name=r",
                             "train.progress=false"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("step_*.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    match = re.search(r"checkpoint step_(\d+)\.pt written after step (\d+); continue with: "
                      r"python -m experiments\.run resume=(\S+)", err)
    assert match and match.group(3) == str(run_dir), err
    stopped = int(match.group(2))
    assert stopped >= 5 and int(match.group(1)) == stopped
    assert (run_dir / "checkpoints" / f"step_{stopped:06d}.pt").is_file()

    same = run_cli(f"resume={run_dir}", f"train.steps={stopped}")  # finished at that many steps: its model written
    assert same.returncode == 0 and "without its model: wrote" in same.stderr, same.stderr
    again = run_cli(f"resume={run_dir}", f"train.steps={stopped}")
    assert again.returncode == 0 and "nothing to train" in again.stderr and f"train.steps={stopped}" in again.stderr

    more = run_cli(f"resume={run_dir}", f"train.steps={stopped + 5}", "train.progress=false")
    assert more.returncode == 0, more.stderr
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        tags = scalars(run_dir)
    finally:
        logging.getLogger().removeHandler(handler)
    assert not [r for r in records if "out of order" in r.getMessage().lower()]
    assert [s for s, _ in tags["reward/mean"]] == list(range(1, stopped + 6))


def test_sweep_keeps_bookkeeping_under_log_dir_and_ends_with_one_table(tmp_path):
    out = run_cli("-m", "seed=0,1", "algo=grpo,grpo_hadw", "train.steps=5", "train.progress=false",
                  f"train.log_dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    assert not (tmp_path.parent / "multirun").exists() and not list(tmp_path.parent.glob("multirun"))
    from tests.conftest import ROOT
    assert not (ROOT / "multirun").exists()
    table = out.stdout[out.stdout.index("final metrics over seeds"):]
    rows = [line for line in table.splitlines() if line.startswith("| algo=")]
    assert [r.split("|")[1].strip() for r in rows] == ["algo=grpo", "algo=grpo_hadw"]
    assert all(r.split("|")[2].strip() == "2" and "±" in r for r in rows)
    sweeps = list((tmp_path / "sweeps").iterdir())
    assert len(sweeps) == 1 and (sweeps[0] / "summary.md").read_text().strip() in out.stdout
    assert len([p for p in tmp_path.iterdir() if p.name != "sweeps"]) == 4  # the four runs
