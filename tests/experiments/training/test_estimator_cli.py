"""Each advantage estimator trains 50 steps through ``python -m experiments.run`` (subprocess),
and the batched simulator gives the single runs' numbers with every one of them."""

import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import run_cli
from tests.experiments.sim.test_batched import assert_same_as_single_runs, configs, one_thread  # noqa: F401

pytestmark = pytest.mark.slow  # subprocess runs: python -m pytest -m 'not slow' skips them

# grpo's advantage is group_norm with eps: swap the estimator, drop its eps (each has its own defaults)
ESTIMATORS = {"rloo": [], "reinforce_pp": [], "passk": ["+algo.advantage.k=4"], "maxrl": [], "shrinkage": [],
              "optimal_baseline": ["+algo.advantage.kappa=0.5"]}


def overrides(name):
    return ["algo=grpo", f"algo.advantage.name={name}", "~algo.advantage.eps", *ESTIMATORS[name]]


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_each_estimator_trains_50_steps_from_the_cli(tmp_path, name):
    out = run_cli(*overrides(name), "train.steps=50", f"train.log_dir={tmp_path}", "train.progress=false")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "grpo on bandit: 50 steps" in out.stdout
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    events = EventAccumulator(str(run_dir))
    events.Reload()
    for tag in ("reward/mean", "accuracy/all", "loss/value"):
        values = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in values] == list(range(1, 51)), tag
        assert all(math.isfinite(v) for _, v in values), tag


def test_passk_with_k_above_the_group_size_is_refused_before_anything_is_written(tmp_path):
    out = run_cli("algo=grpo", "algo.advantage.name=passk", "~algo.advantage.eps", "+algo.advantage.k=9",
                  "train.steps=1", f"train.log_dir={tmp_path / 'runs'}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: algo.advantage.k: pass@k needs 1 <= k <= G; got k=9 with train.group_size=8"]
    assert not (tmp_path / "runs").exists()


def test_batched_equals_single_runs_with_every_estimator(make_cfg):
    # one batch, one algorithm group per estimator: the batch estimators see [R_g, P, G]
    assert_same_as_single_runs(configs(make_cfg, [overrides(name) for name in ESTIMATORS], seeds=(0, 1), steps=10))
