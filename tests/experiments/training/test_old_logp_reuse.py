"""On-policy updates in float32 take the update's own log-probs as the PPO ratio's denominator:
the recompute pass at sampling is skipped, and loss, gradients and weights stay exactly those
of ``old_logp=recompute`` (the pass it replaces)."""

import pytest
import torch

from tests.hf_fixtures import tiny_dir  # noqa: F401

from experiments.training.build import build_trainer, compose_config  # noqa: E402
from tests.experiments.training.test_hf_run import same  # noqa: E402


def length_reward(prompts, completions, **kwargs) -> list[float]:
    """The random tiny model is never right: reward its lengths, so that groups have advantages."""
    return [len(c) / 6 for c in completions]


def tiny_hf(model, *extra: str) -> dict:
    """One torch thread: with two, two runs of the same config in one process already differ in
    the last bits (threaded reductions), recompute or not."""
    return compose_config("policy.num_threads=1", "policy=hf", "env=arithmetic", f"policy.model_path={model}", "policy.max_new_tokens=6",
                          f"env.rewards=[{__name__}:length_reward]",
                          "policy.device=cpu", "policy.dtype=float32", "train.prompts_per_step=3",
                          "train.group_size=4", "train.progress=false", "optim.lr=1e-2", "seed=3", *extra)


def recorded(trainer) -> list[list[torch.Tensor]]:
    """Every optimizer step's gradients (before clipping), recorded as the trainer steps."""
    grads, step = [], trainer.engine.step

    def recording(*args, **kwargs):
        grads.append([p.grad.clone() for p in trainer.policy.parameters()])
        return step(*args, **kwargs)

    trainer.engine.step = recording
    return grads


def recompute_trainer(cfg, run_dir):
    """The same run with the recompute pass at sampling (how every run computed old_logp before)."""
    trainer = build_trainer(cfg, run_dir)
    trainer.old_logp_from_update = trainer.policy.defer_old_logp(False)
    return trainer


@pytest.mark.parametrize("extra", [(), ("algo=dr_grpo", "reweight=hadw"), ("algo=cispo", "train.micro_batch_size=12")],
                         ids=["grpo", "dr_grpo_hadw", "cispo_one_micro_batch"])
def test_the_updates_own_logprobs_give_the_same_loss_gradients_and_weights(tiny_dir, tmp_path, extra):  # noqa: F811
    cfg = tiny_hf(tiny_dir, *extra)
    reuse, recompute = build_trainer(cfg, tmp_path / "a"), recompute_trainer(cfg, tmp_path / "b")
    assert reuse.old_logp_from_update and reuse.policy.old_logp_from_update
    assert not recompute.old_logp_from_update and not recompute.policy.old_logp_from_update
    passes = {"reuse": 0, "recompute": 0}
    for name, trainer in (("reuse", reuse), ("recompute", recompute)):
        scorer = trainer.policy.scorer.forward

        def counting(*args, _name=name, _scorer=scorer):
            passes[_name] += 1
            return _scorer(*args)

        trainer.policy.scorer.forward = counting
    grads = {"reuse": recorded(reuse), "recompute": recorded(recompute)}
    for _ in range(3):
        a, b = reuse.train_step(), recompute.train_step()
        assert a["loss/value"] == b["loss/value"] and a["loss/grad_norm"] == b["loss/grad_norm"]
    assert same(reuse.history, recompute.history) and reuse.history[0]["adv/abs_mean"] > 0
    assert len(grads["reuse"]) == 3 and all(torch.equal(x, y) for step_a, step_b in zip(*grads.values())
                                              for x, y in zip(step_a, step_b))
    for x, y in zip(reuse.policy.parameters(), recompute.policy.parameters()):
        assert torch.equal(x, y)
    rounds = sum(h["sampling/rounds"] for h in reuse.history)
    assert passes["recompute"] - passes["reuse"] == rounds  # one recompute pass per sampling round, skipped


@pytest.mark.parametrize("extra", [("train.ppo_epochs=2",), ("train.minibatches=2",), ("algo=dapo",),
                                   ("train.micro_batch_size=5",), ("policy.old_logp=sampler",)],
                         ids=["epochs", "minibatches", "filter", "micro_batches", "sampler"])
def test_several_steps_per_batch_or_sampler_logp_keep_their_old_logp(tiny_dir, tmp_path, extra):  # noqa: F811
    """Several optimizer steps per batch keep the recompute pass; so do DAPO's filter and
    micro-batches: the update's passes are not over the sampled batch (other rows, other
    padding), where the recomputed ratio is 1 only to ~5e-7 and reusing would change numbers."""
    trainer = build_trainer(tiny_hf(tiny_dir, *extra), tmp_path)
    assert not trainer.old_logp_from_update and not trainer.policy.old_logp_from_update
    recompute = extra[0] != "policy.old_logp=sampler"
    rollout = trainer.policy.sample(trainer.task.sample_prompts(2), 2, torch.Generator().manual_seed(0))
    assert torch.equal(rollout.old_logp, trainer.policy.logprobs(rollout).detach()) == recompute


def test_a_trainer_with_several_steps_per_batch_takes_back_the_deferral(tiny_dir, tmp_path):  # noqa: F811
    import attrs

    from experiments.training.trainer import Trainer

    a = build_trainer(tiny_hf(tiny_dir), tmp_path / "a")
    assert a.policy.old_logp_from_update
    b = Trainer(attrs.evolve(a.params, ppo_epochs=2), a.task, a.policy, a.engine, a.algo, None, 0, tmp_path / "b")
    assert not b.old_logp_from_update and not a.policy.old_logp_from_update  # the shared policy recomputes again
