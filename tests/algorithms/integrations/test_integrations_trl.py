"""ReweightedGRPOTrainer: TRL's GRPOTrainer (trl 1.16) trains on our reweighted advantages.

TRL trains the tiny Qwen3 on the CPU (its own generation, rewards, advantages and loss). The
reward function's value depends only on the step and the completion's position (a seeded
table), so the reward sequence is known in advance, the same after a resume, and our own
``algo.reweighter(algo.advantage(rewards), rewards)`` can be run on it beside TRL:

* every generation batch: the advantages TRL trains on equal ours (1e-6), for several loss types;
* the belief: each step's logged ``hadw/belief`` and the final state equal ours;
* resume from a TRL checkpoint continues the state exactly; evaluation leaves it unmoved;
* two gloo processes (torchrun) compute the same weights and the same state (groups split
  across the processes).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from algorithms import build_algorithm  # noqa: E402
from algorithms.integrations import STATE_FILE  # noqa: E402
from algorithms.integrations.trl import ReweightedGRPOTrainer  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.hf_fixtures import tiny_dir  # noqa: E402,F401

G, PER_DEVICE, MAX_NEW = 4, 8, 6
HADW = {"name": "hadw", "lambda_scale": 1.5}


def table_rewards(step: int, rank: int, n: int) -> list[float]:
    """The rewards of generation batch ``step`` on process ``rank``: Bernoulli draws whose rate moves
    with the step (so the belief moves), from a seeded generator: known in advance, equal after a resume."""
    rate = (0.3, 0.6, 0.45, 0.7, 0.5, 0.7)[step % 6]
    generator = torch.Generator().manual_seed(1000 * step + rank)
    return torch.bernoulli(torch.full((n,), rate), generator=generator).tolist()


def step_reward(completions, trainer_state, **kwargs) -> list[float]:
    return table_rewards(trainer_state.global_step, int(os.environ.get("RANK", 0)), len(completions))


class RecordingTrainer(ReweightedGRPOTrainer):
    """Keeps each generation batch's advantages (before TRL's shuffle) and those of each loss call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generated: list[torch.Tensor] = []
        self.trained: list[torch.Tensor] = []

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self.generated.append(output["advantages"].clone())
        return output

    def _compute_loss(self, model, inputs):
        self.trained.append(inputs["advantages"].clone())
        loss = super()._compute_loss(model, inputs)
        assert torch.isfinite(loss)
        return loss


def make_trainer(model_dir, out_dir, *, reweight=HADW, max_steps=4, save_steps=2, **args) -> RecordingTrainer:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    prompts = [{"prompt": [{"role": "user", "content": f"{a}+{a + 1}="}]} for a in range(16)]
    settings = dict(per_device_train_batch_size=PER_DEVICE, num_generations=G, max_completion_length=MAX_NEW,
                    max_steps=max_steps, save_steps=save_steps, learning_rate=1e-3, use_cpu=True, bf16=False,
                    report_to=[], logging_steps=1, gradient_checkpointing=False, seed=0)
    config = GRPOConfig(output_dir=str(out_dir), **{**settings, **args})
    return RecordingTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=step_reward,
                            args=config, train_dataset=datasets.Dataset.from_list(prompts),
                            eval_dataset=datasets.Dataset.from_list(prompts[:4]),
                            processing_class=AutoTokenizer.from_pretrained(model_dir), reweight=reweight)


def ours(steps: range, advantage: dict, reweight: dict = HADW):
    """Our algorithm on the same reward sequence: per step (rewards [N], weighted [N], stats), and the algorithm."""
    algo = build_algorithm({"name": "grpo", "advantage": advantage, "loss": {"name": "ppo_clip"},
                            "aggregation": {"name": "seq_mean_token_mean"}}, reweight)
    out = []
    for step in steps:
        rewards = torch.tensor(table_rewards(step, 0, PER_DEVICE)).view(-1, G)  # (P, G)
        weighted, stats = algo.reweighter(algo.advantage(rewards), rewards)
        out.append((rewards.reshape(-1), weighted.reshape(-1), stats))
    return out, algo


def logged(trainer, key: str, after: int = 0) -> list[float]:
    """The values of ``key`` in TRL's logs of the steps after ``after``
    (a resumed run's logs start with the checkpoint's)."""
    return [entry[key] for entry in trainer.state.log_history if key in entry and entry["step"] > after]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key], key


@pytest.fixture(scope="module")
def hadw_run(tiny_dir, tmp_path_factory):  # noqa: F811
    """Four steps of TRL's default loss (dapo) with HA-DW, checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("trl-hadw")
    trainer = make_trainer(tiny_dir, out)
    trainer.train()
    return trainer, out


def test_trl_trains_on_our_reweighted_advantages_and_belief(hadw_run):
    trainer, _ = hadw_run
    expected, algo = ours(range(4), {"name": "group_norm", "eps": 1e-4})  # TRL: (r - mean) / (std + 1e-4)
    assert len(trainer.generated) == 4
    for step, ((rewards, weighted, stats), got) in enumerate(zip(expected, trainer.generated)):
        torch.testing.assert_close(got, weighted, atol=1e-6, rtol=0, msg=f"step {step}")
        plain = algo.advantage(rewards.view(-1, G)).reshape(-1)
        assert (weighted - plain).abs().max() > 0.05  # the weights are not 1: HA-DW did something
        trained = trainer.trained[step]  # what the loss saw: the same values, in TRL's shuffled order
        torch.testing.assert_close(trained.sort().values, got.sort().values, atol=0, rtol=0)
    beliefs = [float(stats["hadw/belief"]) for _, _, stats in expected]
    assert beliefs[0] == 0.5 and len(set(beliefs)) == 4  # c0, then the belief moves every step
    assert logged(trainer, "hadw/belief") == pytest.approx(beliefs, abs=1e-6)
    assert logged(trainer, "phi/correct") == pytest.approx([float(s["phi/correct"]) for _, _, s in expected], abs=1e-6)
    assert_same_state(trainer.reweighter.state_dict(), algo.reweighter.state_dict())
    assert trainer.rlvr_reweight.batches == 4


def test_resume_from_a_trl_checkpoint_continues_the_belief_exactly(hadw_run, tiny_dir, tmp_path):  # noqa: F811
    first, out = hadw_run
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / STATE_FILE).is_file() and (out / "checkpoint-4" / STATE_FILE).is_file()
    resumed = make_trainer(tiny_dir, tmp_path)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert len(resumed.generated) == 2  # steps 3 and 4 only
    for got, want in zip(resumed.generated, first.generated[2:]):
        torch.testing.assert_close(got, want, atol=0, rtol=0)  # the same weights: the restored belief is exact
    assert logged(resumed, "hadw/belief", after=2) == logged(first, "hadw/belief", after=2)
    assert logged(first, "hadw/belief")[2] != 0.5  # (a fresh belief would read c0 = 0.5 here)
    assert_same_state(resumed.reweighter.state_dict(), first.reweighter.state_dict())


def test_evaluation_applies_the_weights_without_moving_the_belief(hadw_run):
    trainer, _ = hadw_run
    before = trainer.reweighter.state_dict()
    metrics = trainer.evaluate()
    assert metrics["eval_hadw/belief"] == pytest.approx(float(before["prior"]), abs=1e-6)
    assert_same_state(trainer.reweighter.state_dict(), before)
    assert trainer.rlvr_reweight.batches == 4


def test_resume_refuses_a_state_saved_under_another_reweighter(hadw_run, tiny_dir, tmp_path):  # noqa: F811
    _, out = hadw_run
    trainer = make_trainer(tiny_dir, tmp_path, reweight={"name": "hadw", "lambda_scale": 1.3}, max_steps=3)
    with pytest.raises(ValueError, match=r"saved with .*'lambda_scale': 1.5.*configured with .*'lambda_scale': 1.3"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-2"))


# TRL loss_type / scale_rewards -> our advantage stage; each reweighter on one of them
CASES = [("grpo", "group", {"name": "group_norm", "eps": 1e-4}, {"name": "focal", "gamma": 2.0}),
         ("dr_grpo", "none", {"name": "group_mean"}, {"name": "agrae"}),
         ("cispo", "group", {"name": "group_norm", "eps": 1e-4}, {"name": "hadw_window", "window": 3})]


@pytest.mark.parametrize("loss_type,scale_rewards,advantage,reweight", CASES, ids=[c[0] for c in CASES])
def test_every_loss_type_trains_on_our_advantages(tiny_dir, tmp_path, loss_type, scale_rewards,  # noqa: F811
                                                  advantage, reweight):
    trainer = make_trainer(tiny_dir, tmp_path, reweight=reweight, max_steps=2, save_steps=10, loss_type=loss_type,
                           scale_rewards=scale_rewards)
    trainer.train()
    expected, _ = ours(range(2), advantage, reweight)
    for (_, weighted, _), got in zip(expected, trainer.generated, strict=True):
        torch.testing.assert_close(got, weighted, atol=1e-6, rtol=0)
    assert len(logged(trainer, "phi/correct")) == 2


def test_bad_reweight_config_fails_at_construction_with_the_field(tiny_dir, tmp_path):  # noqa: F811
    from algorithms import ConfigError

    with pytest.raises(ConfigError, match=r"reweight\.name: unknown reweighter 'hdaw'; valid: agrae, focal, hadw"):
        make_trainer(tiny_dir, tmp_path, reweight={"name": "hdaw"})
    with pytest.raises(ConfigError, match=r"reweight\.lambda_scale: must be > 0"):
        make_trainer(tiny_dir, tmp_path, reweight={"name": "hadw", "lambda_scale": -1.0})


@pytest.mark.slow
def test_two_gloo_processes_compute_the_same_weights(tiny_dir, tmp_path):  # noqa: F811
    """torchrun, 2 CPU processes, 6 completions each in groups of 4: the middle group spans both processes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "tests/algorithms/integrations/trl_two_process_worker.py", str(tiny_dir), str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert_same_state(results[0]["state"], results[1]["state"])
    assert results[0]["state"]["count"] == 4  # c0 + three generation batches
    algo = build_algorithm({"name": "grpo", "advantage": {"name": "group_norm", "eps": 1e-4},
                            "loss": {"name": "ppo_clip"}, "aggregation": {"name": "seq_mean_token_mean"}}, HADW)
    for step in range(3):
        rewards = torch.tensor(table_rewards(step, 0, 6) + table_rewards(step, 1, 6)).view(-1, G)  # (3, 4)
        weighted, _ = algo.reweighter(algo.advantage(rewards), rewards)
        got = torch.cat([results[0]["generated"][step], results[1]["generated"][step]])  # (12,)
        torch.testing.assert_close(got, weighted.reshape(-1), atol=1e-6, rtol=0, msg=f"step {step}")
    assert_same_state(results[0]["state"], algo.reweighter.state_dict())
