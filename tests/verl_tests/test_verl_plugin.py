"""The verl plugin (verl 0.9): verl's own compute_advantage runs our estimators, as verl's trainer calls it.

The batch is a verl ``DataProto`` (token-level rewards on each response's last token, uneven
response lengths, rows of a prompt scattered across the batch as after verl's balancing), the
config is verl's own Hydra config composed with command-line overrides, and the expected values
are our ``algo.reweighter(algo.advantage(rewards), rewards)`` on the same rewards [P, G].
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

verl = pytest.importorskip("verl", reason="verl runs in its own environment: bash .ci/verl")

from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.config import AlgoConfig  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories  # noqa: E402

from algorithms import ConfigError, build_algorithm  # noqa: E402
from algorithms.integrations import STATE_FILE  # noqa: E402
from algorithms.integrations.verl import CALLBACK, DRIVER, ReweighterCheckpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]  # (not tests.conftest: verl installs a top-level package named tests)
P, G, T = 5, 4, 7
pytestmark = pytest.mark.filterwarnings("ignore:.*state is not saved with verl's checkpoints")
NAMES = ["grpo_hadw", "grpo_focal", "grpo_agrae", "rlvr_reweighted"]


@pytest.fixture(autouse=True)
def fresh_driver():
    DRIVER.reset()
    yield
    DRIVER.reset()


def verl_config(*overrides: str):
    """verl's PPO trainer config (its own YAML) with these command-line overrides."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=list(overrides))


def batch(step: int) -> tuple[DataProto, torch.Tensor, np.ndarray]:
    """A verl batch of P prompts x G responses in scrambled row order, and its rewards [P, G] by prompt."""
    g = torch.Generator().manual_seed(step)
    rewards = torch.bernoulli(torch.full((P, G), (0.3, 0.7, 0.5)[step % 3]), generator=g)  # (P, G)
    rewards[0] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # a hard prompt and ...
    rewards[1] = 1.0  # ... a degenerate group, every step
    rows = torch.randperm(P * G, generator=g)  # row r holds response rows[r] (prompt rows[r] // G)
    lengths = torch.randint(1, T + 1, (P * G,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()  # (B, T)
    token_rewards = torch.zeros(P * G, T)
    token_rewards[torch.arange(P * G), lengths - 1] = rewards.reshape(-1)[rows]  # outcome reward on the last token
    uid = np.array([f"prompt-{int(i) // G}" for i in rows], dtype=object)
    data = DataProto.from_dict(tensors={"token_level_rewards": token_rewards, "response_mask": mask},
                               non_tensors={"uid": uid})
    return data, rewards, rows.numpy()


def ours(reweight: dict, advantage: dict):
    return build_algorithm({"name": "grpo", "advantage": advantage, "loss": {"name": "ppo_clip"},
                            "aggregation": {"name": "seq_mean_token_mean"}}, reweight)


def expected_rows(algo, rewards: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, dict]:
    weighted, stats = algo.reweighter(algo.advantage(rewards), rewards)  # (P, G)
    return weighted.reshape(-1)[torch.from_numpy(rows)], stats  # (B,) in the batch's row order


CASES = {  # estimator, overrides -> our reweighter and advantage
    "grpo_hadw": ([], {"name": "hadw"}, {"name": "group_norm", "eps": 1e-6}),
    "grpo_hadw+lambda": (["+algorithm.rlvr.reweight.lambda_scale=1.3"], {"name": "hadw", "lambda_scale": 1.3},
                         {"name": "group_norm", "eps": 1e-6}),
    "grpo_focal": (["algorithm.norm_adv_by_std_in_grpo=false"], {"name": "focal"}, {"name": "group_mean"}),
    "grpo_agrae": ([], {"name": "agrae"}, {"name": "group_norm", "eps": 1e-6}),
    "rlvr_reweighted": (["+algorithm.rlvr.reweight.name=hadw_window", "+algorithm.rlvr.reweight.window=2",
                         "+algorithm.rlvr.advantage.name=group_mean"], {"name": "hadw_window", "window": 2},
                        {"name": "group_mean"}),
}


@pytest.mark.parametrize("via", ["compute_advantage", "v1_trainer_path"])
@pytest.mark.parametrize("case", list(CASES))
def test_verls_compute_advantage_gives_ours_and_the_state_evolves_as_ours(case, via):
    overrides, reweight, advantage = CASES[case]
    name = case.split("+")[0]
    config = verl_config(f"algorithm.adv_estimator={name}", *overrides)
    algo = ours(reweight, advantage)
    for step in range(4):
        data, rewards, rows = batch(step)
        if via == "compute_advantage":  # the legacy trainer's call
            out = compute_advantage(data, adv_estimator=config.algorithm.adv_estimator, num_repeat=G,
                                    config=config.algorithm)
        else:  # what verl's v1 trainer (its default) calls
            out = compute_advantage_for_multi_trajectories(data, batch_keys=[f"k_0_{i}" for i in range(P * G)],
                                                           adv_estimator=config.algorithm.adv_estimator,
                                                           num_repeat=G, config=config.algorithm)
        want, stats = expected_rows(algo, rewards, rows)
        mask = data.batch["response_mask"]
        torch.testing.assert_close(out.batch["advantages"], want[:, None] * mask, atol=1e-6, rtol=0)
        torch.testing.assert_close(out.batch["returns"], out.batch["advantages"], atol=0, rtol=0)
        assert DRIVER.latest[name]["phi/correct"] == pytest.approx(float(stats["phi/correct"]), abs=1e-6)
        if "hadw/belief" in stats:
            assert DRIVER.latest[name]["hadw/belief"] == pytest.approx(float(stats["hadw/belief"]), abs=1e-7)
    state, want_state = DRIVER.runs[name].reweight.reweighter.state_dict(), algo.reweighter.state_dict()
    assert state.keys() == want_state.keys()
    for key in state:  # the same state after the same batches, bit for bit
        a, b = state[key], want_state[key]
        assert torch.equal(a, b) if torch.is_tensor(a) else a == b, key
    assert DRIVER.runs[name].reweight.batches == 4


def test_hadw_belief_sequence_and_weights_by_closed_form():
    """HA-DW by hand on step 0: belief c0 = 0.5, eta = 1 * 0.5; the hard prompt [1, 0, 0, 0] has p_hat 1/4:
    diff = -1/4, the correct answer (A > 0) gets D = +1: Phi = 1.5 e^{1/4}, the wrong ones 1.5 e^{-1/4}."""
    config = verl_config("algorithm.adv_estimator=grpo_hadw")
    data, rewards, rows = batch(0)
    out = compute_advantage(data, adv_estimator="grpo_hadw", config=config.algorithm)
    scalar = out.batch["advantages"].sum(-1) / data.batch["response_mask"].sum(-1)  # (B,)
    a_hat = (torch.tensor([1.0, 0, 0, 0]) - 0.25) / (torch.tensor([1.0, 0, 0, 0]).std() + 1e-6)
    phi = 1.5 * torch.exp(torch.tensor([0.25, -0.25, -0.25, -0.25]))
    first = [list(rows).index(i) for i in range(G)]  # the batch rows of prompt 0
    torch.testing.assert_close(scalar[first], phi * a_hat, atol=1e-6, rtol=0)
    assert DRIVER.latest["grpo_hadw"]["hadw/belief"] == 0.5
    posterior = 0.5 * 0.5 + 0.5 * rewards.double().mean().item()  # C_1 = (1 - eta) c0 + eta y_1
    assert float(DRIVER.runs["grpo_hadw"].reweight.reweighter.prior) == pytest.approx(posterior, abs=1e-12)


def test_verls_algo_config_dataclass_works_too():
    data, rewards, rows = batch(1)
    out = compute_advantage(data, adv_estimator="grpo_focal", config=AlgoConfig(norm_adv_by_std_in_grpo=False))
    want, _ = expected_rows(ours({"name": "focal"}, {"name": "group_mean"}), rewards, rows)
    torch.testing.assert_close(out.batch["advantages"], want[:, None] * data.batch["response_mask"], atol=1e-6, rtol=0)


def test_checkpoint_saves_and_restores_the_belief_exactly(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    run = verl_config("algorithm.adv_estimator=grpo_hadw", f"trainer.default_local_dir={checkpoints}")
    ReweighterCheckpoint(run)  # a fresh run: resume_mode auto finds no checkpoint
    for step in range(2):
        compute_advantage(batch(step)[0], adv_estimator="grpo_hadw", config=run.algorithm)
    folder = checkpoints / "global_step_2"  # what verl's _save_checkpoint writes, then calls on_save
    folder.mkdir(parents=True)
    (checkpoints / "latest_checkpointed_iteration.txt").write_text("2")
    ReweighterCheckpoint(run).on_save(trainer=None, global_step=2, checkpoint_dir=str(folder))
    assert (folder / STATE_FILE).is_file()
    third = compute_advantage(batch(2)[0], adv_estimator="grpo_hadw", config=run.algorithm).batch["advantages"]
    uninterrupted = DRIVER.runs["grpo_hadw"].reweight.state_dict()

    for resume in ([], ["trainer.resume_mode=resume_path", f"trainer.resume_from_path={folder}"]):
        DRIVER.reset()  # a new driver process
        config = verl_config("algorithm.adv_estimator=grpo_hadw", f"trainer.default_local_dir={checkpoints}", *resume)
        ReweighterCheckpoint(config)  # the trainer builds its callback: the state comes back from global_step_2
        again = compute_advantage(batch(2)[0], adv_estimator="grpo_hadw", config=config.algorithm).batch["advantages"]
        assert torch.equal(again, third)
        state = DRIVER.runs["grpo_hadw"].reweight.state_dict()
        assert state["batches"] == 3 and state["reweighter"]["count"] == 4
        assert all(torch.equal(state["reweighter"][k], uninterrupted["reweighter"][k]) for k in ("prior", "history"))

    DRIVER.reset()  # without the restore the weights differ: the test can fail
    fresh = compute_advantage(batch(2)[0], adv_estimator="grpo_hadw", config=run.algorithm).batch["advantages"]
    assert not torch.allclose(fresh, third)


def test_restore_refuses_another_reweighter_config(tmp_path):
    folder = tmp_path / "global_step_1"
    config = verl_config("algorithm.adv_estimator=grpo_hadw")
    compute_advantage(batch(0)[0], adv_estimator="grpo_hadw", config=config.algorithm)
    ReweighterCheckpoint(None).on_save(trainer=None, global_step=1, checkpoint_dir=str(folder))
    DRIVER.reset()
    config = verl_config("algorithm.adv_estimator=grpo_hadw", "+algorithm.rlvr.reweight.lambda_scale=2.0",
                         "trainer.resume_mode=resume_path", f"trainer.resume_from_path={folder}")
    ReweighterCheckpoint(config)
    with pytest.raises(ValueError, match=r"saved with .*'lambda_scale': 1.5.*configured with .*'lambda_scale': 2.0"):
        compute_advantage(batch(1)[0], adv_estimator="grpo_hadw", config=config.algorithm)


def test_without_the_callback_a_warning_says_the_state_is_not_saved():
    with pytest.warns(UserWarning, match="not saved with verl's checkpoints: set trainer.checkpoint_callback_class="):
        compute_advantage(batch(0)[0], adv_estimator="grpo_agrae", config=None)


@pytest.mark.parametrize("overrides,error,match", [
    (["algorithm.adv_estimator=rlvr_reweighted"], ConfigError, r"algorithm.rlvr.reweight.name: missing"),
    (["algorithm.adv_estimator=grpo_hadw", "+algorithm.rlvr.reweight.name=focal"], ConfigError,
     r"estimator grpo_hadw applies hadw, got 'focal'"),
    (["algorithm.adv_estimator=grpo_hadw", "+algorithm.rlvr.reweight.eta=-1"], ConfigError,
     r"algorithm.rlvr.reweight.eta: must be > 0"),
    (["algorithm.adv_estimator=grpo_hadw", "+algorithm.rlvr.weights=1"], ConfigError,
     r"algorithm.rlvr.weights: unknown key; valid: advantage, reweight"),
])
def test_bad_config_fails_with_the_field(overrides, error, match):
    config = verl_config(*overrides)
    with pytest.raises(error, match=match):
        compute_advantage(batch(0)[0], adv_estimator=config.algorithm.adv_estimator, config=config.algorithm)


def test_partial_groups_are_refused_by_size():
    data = batch(0)[0]
    partial = data.select_idxs(np.arange(P * G - 1))  # one response missing
    with pytest.raises(ValueError, match=r"groups of unequal size \(3 to 4 responses per prompt id\)"):
        compute_advantage(partial, adv_estimator="grpo_hadw", config=None)


def registered(env: dict[str, str]) -> list[str]:
    """The names of our estimators verl's registry holds after a bare ``import verl`` in a fresh process."""
    code = ("import verl; from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY as R; "
            f"print(' '.join(n for n in {NAMES!r} if n in R))")
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd="/", capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def test_verl_loads_the_plugin_through_the_entry_point_or_external_modules():
    assert registered({}) == NAMES  # the verl.plugins entry point of the installed package
    assert registered({"VERL_USE_EXTERNAL_PLUGINS": "none"}) == []  # (so the entry point did it)
    by_env = {"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": "algorithms.integrations.verl"}
    assert registered(by_env) == NAMES


def test_main_runs_verls_main_ppo_with_the_plugin_and_the_checkpoint_callback(monkeypatch):
    from verl.trainer import main_ppo

    from algorithms.integrations.verl import main as entry

    seen = {}
    monkeypatch.setattr(main_ppo, "main", lambda: seen.update(argv=list(sys.argv),
                                                              modules=os.environ["VERL_USE_EXTERNAL_MODULES"]))
    monkeypatch.setenv("VERL_USE_EXTERNAL_MODULES", "my.plugin")
    entry.main(["algorithm.adv_estimator=grpo_hadw", "trainer.total_training_steps=3"])
    assert seen["argv"][1:] == [f"trainer.checkpoint_callback_class={CALLBACK}", "algorithm.adv_estimator=grpo_hadw",
                                "trainer.total_training_steps=3"]
    assert seen["modules"] == "my.plugin,algorithms.integrations.verl"
    with pytest.warns(UserWarning, match="saved with verl's checkpoints only by"):
        entry.main(["trainer.checkpoint_callback_class=my.Callback"])
    assert seen["argv"][1:] == ["trainer.checkpoint_callback_class=my.Callback"]


def test_verls_config_validation_accepts_the_rlvr_keys():
    """main_ppo validates the whole config before it starts Ray: ``algorithm.rlvr`` passes."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    config = verl_config("algorithm.adv_estimator=grpo_hadw", "+algorithm.rlvr.reweight.lambda_scale=1.3",
                         "actor_rollout_ref.model.path=/x", "data.train_files=/x", "data.val_files=/x",
                         "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1", "actor_rollout_ref.rollout.n=4",
                         "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
                         "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1", "trainer.n_gpus_per_node=1")
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


def test_main_composes_verls_own_config():
    """``python -m algorithms.integrations.verl.main ... --cfg job``: verl's Hydra app prints the config it runs."""
    done = subprocess.run([sys.executable, "-W", "ignore", "-m", "algorithms.integrations.verl.main",
                           "algorithm.adv_estimator=grpo_hadw", "+algorithm.rlvr.reweight.lambda_scale=1.3",
                           "--cfg", "job"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    job = OmegaConf.create(done.stdout)
    assert job.algorithm.adv_estimator == "grpo_hadw" and job.algorithm.rlvr.reweight.lambda_scale == 1.3
    assert job.trainer.checkpoint_callback_class == CALLBACK
