"""The run's loggers: non-finite scalars shown as counters (read back from the event file), and
train.loggers=[tensorboard,wandb] writing the same tags, values, config and samples to an
offline W&B run (read back from its .wandb file), continued on resume."""

import json
import math
import os
import struct
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from algorithms import ConfigError
from experiments.training.tracking import WANDB_MISSING, TensorBoardLogger, make_logger, split_nonfinite
from tests.conftest import ROOT


def scalars(run_dir) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_split_nonfinite_counts_each_tag_in_its_place():
    counts = {}
    assert split_nonfinite({"a": 1.0, "b": math.nan}, counts) == {"a": 1.0, "nonfinite/b": 1.0}
    assert split_nonfinite({"a": math.inf, "b": -math.inf}, counts) == {"nonfinite/a": 1.0, "nonfinite/b": 2.0}
    assert counts == {"a": 1, "b": 2}


def test_a_nan_scalar_shows_as_its_counter_in_the_event_file(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    for step, value in enumerate([0.5, math.nan, 0.25, math.inf, math.nan], start=1):
        logger.log(step, {"loss/value": value, "reward/mean": 1.0})
    logger.close()
    tags = scalars(tmp_path)
    assert tags["loss/value"] == {1: 0.5, 3: 0.25}  # TensorBoard would drop the NaN silently
    assert tags["nonfinite/loss/value"] == {2: 1.0, 4: 2.0, 5: 3.0}
    assert tags["reward/mean"] == {s: 1.0 for s in range(1, 6)} and "nonfinite/reward/mean" not in tags


def test_a_resumed_logger_counts_on_from_the_history(tmp_path):
    logger = TensorBoardLogger(tmp_path, history=[{"x": math.nan}, {"x": 1.0}])
    logger.log(3, {"x": math.nan})
    logger.close()
    assert scalars(tmp_path)["nonfinite/x"] == {1: 1.0, 3: 2.0}


def test_wandb_without_the_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails
    with pytest.raises(ConfigError) as info:
        make_logger(["tensorboard", "wandb"], tmp_path)
    assert str(info.value) == WANDB_MISSING == "train.loggers: wandb is not installed; pip install 'rlvr-sim[wandb]'"
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ wandb, offline, as a user runs it


def wandb_records(path):
    """The records of a W&B datastore file (``run-<id>.wandb``: a LevelDB-style log of
    protobuf ``Record``s in 32 KiB blocks, after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # full, last
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def wandb_run(run_dir):
    """(run record, {step: {key: value}} of its history) of each offline run under ``run_dir/wandb``."""
    out = []
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        (file,) = folder.glob("run-*.wandb")
        run, history = None, {}
        for record in wandb_records(file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
            elif kind == "history":
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                history.setdefault(row["_step"], {}).update(row)
        out.append((folder, run, history))
    return out


def train(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**env, "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
def test_wandb_offline_gets_the_tensorboard_tags_config_and_samples_and_resume_continues_it(tmp_path):
    pytest.importorskip("wandb")
    common = ("train.loggers=[tensorboard,wandb]", f"train.log_dir={tmp_path}", "train.run_name=w",
              "train.progress=false", "train.samples_every=2", "train.checkpoint_every=2")
    out = train(*common, "train.steps=4")
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "w"
    run_id = (run_dir / "wandb-run-id").read_text().strip()
    [(folder, run, history)] = wandb_run(run_dir)
    assert run.run_id == run_id and run.display_name == "w" and run.project == "rlvr-sim"
    assert folder.name.endswith(run_id)
    config = {u.key: json.loads(u.value_json) for u in run.config.update if u.key != "_wandb"}
    from omegaconf import OmegaConf
    assert config == OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    tb = scalars(run_dir)
    assert sorted(history) == [1, 2, 3, 4]
    logged = {k for row in history.values() for k in row if not k.startswith("_")}
    scalar_keys = {k for k in logged if not k.startswith(("samples/", "reweight/weights/"))}
    assert scalar_keys == set(tb) and "accuracy/all" in tb  # the same tags ...
    for tag, values in tb.items():  # ... and values (TensorBoard keeps float32)
        assert {s: history[s][tag] for s in values} == pytest.approx(values, rel=1e-6)
    assert history[2]["samples/_type"] == "table-file" and history[2]["reweight/weights/_type"] == "histogram"
    table = json.loads((folder / "files" / history[4]["samples/path"]).read_text())
    assert table["columns"] == ["prompt", "completion", "extracted", "reward"] and len(table["data"]) == 4

    out = train(f"resume={run_dir}", "train.steps=6")
    assert out.returncode == 0, out.stderr[-3000:]
    runs = wandb_run(run_dir)
    assert len(runs) == 2 and (run_dir / "wandb-run-id").read_text().strip() == run_id
    _, resumed, history = runs[1]
    assert resumed.run_id == run_id and sorted(history) == [5, 6]  # the same W&B run, its new steps
    assert {s: v for s, v in scalars(run_dir)["accuracy/all"].items() if s > 4} == pytest.approx(
        {s: history[s]["accuracy/all"] for s in (5, 6)}, rel=1e-6)


@pytest.mark.slow
def test_wandb_missing_is_one_error_line(tmp_path):
    code = ("import runpy, sys; sys.modules['wandb'] = None; "
            f"sys.argv = ['run', 'train.loggers=[tensorboard,wandb]', 'train.log_dir={tmp_path}', 'train.steps=1']; "
            "runpy.run_module('experiments.run', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: train.loggers: wandb is not installed; pip install 'rlvr-sim[wandb]'"]
    assert not any(tmp_path.iterdir())
