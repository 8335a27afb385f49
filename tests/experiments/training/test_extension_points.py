"""Adding a stage is one class and one registration, here in this file: a reweighter that the
config names and the trainer applies, and a sampler that a transformers policy generates with.
(The registrations run while this module's tests do, so other tests see the registries as shipped.)"""

import attrs
import pytest
import torch

from algorithms.registry import gt
from algorithms.reweighters import REWEIGHTERS, Reweighter, weight_stats
from experiments.training.build import build_trainer, compose_config


@attrs.frozen
class ScaleParams:
    factor: float = attrs.field(default=2.0, validator=gt(0.0))
    """Every advantage times this."""


class ScaleReweighter(Reweighter):
    """A' = factor * A."""

    def __call__(self, advantages, rewards):
        return self.params.factor * advantages, weight_stats(torch.full_like(advantages, self.params.factor), advantages)


def test_a_reweighter_registered_here_is_named_by_the_config_and_applied(tmp_path):
    cfg = compose_config("algo=grpo", "reweight.name=example_scale", "+reweight.factor=3.0", "train.steps=2",
                         "train.progress=false")
    trainer = build_trainer(cfg, tmp_path)
    values = trainer.train_step()
    assert trainer.algo.name == "grpo_example_scale"
    assert values["adv/weighted_abs_mean"] == pytest.approx(3.0 * values["adv/abs_mean"], rel=1e-6)
    assert values["phi/correct"] == pytest.approx(3.0)
    with pytest.raises(Exception, match="reweight.factor: must be > 0.0"):
        build_trainer(compose_config("algo=grpo", "reweight.name=example_scale", "+reweight.factor=-1"), tmp_path)


pytest.importorskip("transformers")

from policies.hf.samplers import SAMPLERS, Samples  # noqa: E402


@attrs.frozen
class EchoParams:
    token: str = attrs.field(default="7", converter=str)
    """The character every response repeats."""


class EchoSampler:
    """Every response is ``token`` repeated up to the budget, then the stop token (deterministic)."""

    separate_weights = False
    multi_process = True

    def __init__(self, params: EchoParams):
        self.params = params

    def start(self, policy, model_path):
        pass

    def sample(self, policy, prompt_ids, prompt_tokens, prompt_mask, group_size, generator):
        ids = policy.tokenizer.encode(self.params.token)[:1] * (policy.params.max_new_tokens - 1) + [policy.stop_ids[0]]
        b = len(prompt_ids) * group_size
        tokens = torch.tensor([ids] * b)
        mask = torch.ones(b, len(ids))
        return Samples(tokens=tokens, mask=mask, logp=torch.zeros(b, len(ids)), truncated=torch.zeros(b, dtype=torch.bool))

    def after_update(self, policy):
        pass

    def weights_loaded(self, policy):
        pass

    def close(self):
        pass


def test_a_sampler_registered_here_generates_for_a_transformers_policy(tmp_path):
    cfg = compose_config("policy=tiny-qwen3", "env=arithmetic", f"policy.model_path={tmp_path / 'cache'}",
                         "policy.warm_start.steps=0", "policy.max_new_tokens=4", "policy.sampler=example_echo",
                         "+policy.example_echo.token=9", "train.prompts_per_step=2", "train.group_size=2",
                         "train.eval_every=0", "train.progress=false")
    trainer = build_trainer(cfg, tmp_path / "run")
    _, local, _ = trainer.collect()
    assert set(local.rollout.texts) == {"999"}  # the stop token is not text
    assert trainer.old_logp_from_update and torch.equal(local.rollout.old_logp, torch.zeros(4, 4))  # the update's pass
    trainer.train_step()
    trainer = build_trainer({**cfg, "train": {**cfg["train"], "ppo_epochs": 2}}, tmp_path / "epochs")
    _, local, _ = trainer.collect()  # several steps per batch: old_logp is recomputed at sampling
    assert torch.isfinite(local.rollout.old_logp).all() and (local.rollout.old_logp < 0).all()  # recomputed by the model
    with pytest.raises(Exception, match="policy.sampler: unknown sampler 'nope'"):
        build_trainer({**cfg, "policy": {**cfg["policy"], "sampler": "nope"}}, tmp_path / "run2")


@pytest.fixture(scope="module", autouse=True)
def registered_here():
    REWEIGHTERS.register("example_scale", ScaleParams)(ScaleReweighter)  # the one registration of the reweighter
    SAMPLERS.register("example_echo", EchoParams)(EchoSampler)  # the one registration of the sampler
    yield
    REWEIGHTERS.unregister("example_scale")
    SAMPLERS.unregister("example_echo")
