"""Sweeps: grids of run configs, planning into batched and single-run jobs, worker processes,
histories in memory and TensorBoard events on disk."""

import math

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from algorithms import ConfigError
from experiments.sim import History, grid, plan, run_sweep
from experiments.training.build import build_trainer
from experiments.sim.sweep import RunSpec

BASE = ["train.steps=6", "train.prompts_per_step=8", "env.num_prompts=32"]


def test_grid_composes_one_run_per_setting_and_seed():
    specs = grid({"algo": ["grpo_hadw", "gspo_hadw"], "reweight.lambda_scale": [1.0, 1.3]}, seeds=[3, 4], base=BASE)
    assert [s.name for s in specs][:3] == ["algo=grpo_hadw,reweight.lambda_scale=1.0,seed=3",
                                          "algo=grpo_hadw,reweight.lambda_scale=1.0,seed=4",
                                          "algo=grpo_hadw,reweight.lambda_scale=1.3,seed=3"]
    assert len({s.label for s in specs}) == 4 and len(specs) == 8
    last = specs[-1].config
    assert (last["seed"], last["algo"]["loss"]["name"], last["reweight"]["lambda_scale"], last["train"]["steps"]) == (4, "gspo", 1.3, 6)


def test_plan_batches_compatible_runs_and_splits_for_the_workers():
    specs = grid({"algo": ["grpo", "grpo_hadw", "dapo"]}, seeds=range(3), base=BASE)
    specs += grid({"train.group_size": [4]}, seeds=range(2), base=BASE)  # another shape: its own batch
    jobs = plan(specs, workers=1)
    assert [(j.batched, len(j.specs)) for j in jobs] == [(True, 6), (True, 2), (False, 1), (False, 1), (False, 1)]
    assert "dynamic sampling" in jobs[-1].reason
    batch_only = specs[:6]
    assert [len(j.specs) for j in plan(batch_only, workers=2)] == [3, 3]
    assert [len(j.specs) for j in plan(batch_only, workers=1, max_batch=4)] == [4, 2]
    with pytest.raises(ValueError, match="unique"):
        plan([specs[0], specs[0]])
    resumed = RunSpec("r", {**specs[0].config, "resume": "runs/x"})
    with pytest.raises(ConfigError, match="resume is not supported in a sweep"):
        plan([resumed])


@pytest.mark.slow
def test_workers_give_the_in_process_results_and_write_events(tmp_path):
    specs = grid({"algo": ["grpo_hadw", "dapo"]}, seeds=range(2), base=BASE)
    in_process = run_sweep(specs, workers=1)
    parallel = run_sweep(specs, workers=2, log_dir=str(tmp_path))  # spawn workers
    assert [len(j.specs) for j in parallel.jobs] == [2, 1, 1]  # one batch, two single DAPO runs
    for a, b in zip(in_process.runs, parallel.runs):
        assert a.spec.name == b.spec.name and a.batched == b.batched == a.spec.name.startswith("algo=grpo_hadw")
        np.testing.assert_array_equal(a.history.values, b.history.values)
    run = tmp_path / "algo=grpo_hadw,seed=1"
    assert (run / "config.yaml").is_file()
    events = EventAccumulator(str(run))
    events.Reload()
    belief = [e.value for e in events.Scalars("hadw/belief")]
    np.testing.assert_allclose(belief, parallel.runs[1].history.column("hadw/belief"), rtol=1e-6)
    assert [e.step for e in events.Scalars("accuracy/all")] == list(range(1, 7))
    for r in (1, 2):  # the returned final policies (batched, single run) give the last logged exact accuracy
        correct = build_trainer(specs[r].config, tmp_path / "unused").task.correct.numpy()
        accuracy = (parallel.runs[r].final_probs * correct).sum(1).mean()
        assert accuracy == pytest.approx(parallel.runs[r].history.column("accuracy/all")[-1], abs=1e-5)
    summary = parallel.summary("accuracy/all")
    mean, half, n = summary["algo=dapo"]
    assert n == 2 and math.isfinite(mean) and half > 0


def test_history_round_trips_the_trainers_dicts():
    rows = [{"a": 1.0, "b": math.nan}, {"a": 2.5}, {"a": 0.25, "b": 3.0}]
    history = History.from_dicts(rows)
    back = history.as_dicts()
    assert [list(r) for r in back] == [["a", "b"], ["a"], ["a", "b"]]
    assert back[1] == {"a": 2.5} and math.isnan(back[0]["b"]) and back[2]["b"] == 3.0
    assert history.final("b", last=3) == 3.0 and history.final("a", last=2) == pytest.approx(1.375)
    with pytest.raises(KeyError, match="not logged"):
        history.column("c")


def test_run_spec_names_must_be_unique_in_a_sweep(make_cfg):
    cfg = make_cfg(*BASE)
    with pytest.raises(ValueError, match="repeated"):
        run_sweep([RunSpec("x", cfg), RunSpec("x", cfg)], workers=1)


@pytest.mark.slow
def test_bench_sim_runs_from_the_command_line():
    """The benchmark CLI end to end, tiny: the ratio, a sweep over two spawned workers, the profile."""
    from tests.conftest import run_cli

    out = run_cli("runs=2", "steps=2", "repeats=1", "prompts=16", "bank=32", "full_runs=2", "full_steps=3", "profile=true",
                  "profile_steps=2", "profile_top=3", module="experiments.bench.sim")
    assert out.returncode == 0, out.stderr
    assert "batched / sequential = " in out.stdout and "(goal <= 2/R = 1.0000)" in out.stdout and "building" in out.stdout
    assert "full: 2 runs x 3 steps x P=16 x G=8" in out.stdout and "2 batched job(s) on 2 worker(s)" in out.stdout
    assert "profile: single-run Trainer, P=16, G=8, torch threads=1" in out.stdout
