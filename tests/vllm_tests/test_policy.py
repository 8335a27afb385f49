"""``policy.sampler=vllm`` through the policy and the trainer: sampling semantics, the weight push
after updates (``sync_sampler``), and the CLI run of the README.

One trainer (one engine) per module; the tiny Qwen3 with its random init (warm start 0 steps),
float32 on the CPU.
"""

import math

import attrs
import pytest
import torch

from tests.conftest import run_cli

TOL = 1e-3  # float32: the engine and the trainer agree to ~1e-6 on this model
PROMPT = "What is 12+7?"
COMPLETION = "12+7=19. The answer is \\boxed{19}."


def run_config(cache, *extra: str) -> dict:
    from experiments.training.build import compose_config

    return compose_config(
        "policy=tiny-qwen3", "policy.sampler=vllm", "env=arithmetic", "algo=grpo_hadw", f"policy.model_path={cache}",
        "policy.warm_start.steps=0", "policy.max_new_tokens=12", "train.prompts_per_step=3", "train.group_size=4",
        "train.progress=false", "train.eval_every=0", "optim.lr=1e-2", "optim.warmup_steps=0", *extra)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from experiments.training.build import build_trainer

    root = tmp_path_factory.mktemp("vllm_policy")
    trainer = build_trainer(run_config(root / "cache"), root / "run")
    yield trainer
    trainer.policy.sampler.close()


def fixed_rollout(policy):
    """One prompt and a fixed completion (eos included) as a rollout, to score by both sides."""
    from policies.base import Rollout
    from policies.hf.policy import left_pad

    prompt = policy.encode(PROMPT)
    completion = policy.tokenizer(COMPLETION)["input_ids"] + [policy.tokenizer.eos_token_id]
    tokens, mask = torch.tensor([completion]), torch.ones(1, len(completion))
    prompt_tokens, prompt_mask = left_pad([prompt], policy.tokenizer.pad_token_id)
    return Rollout(prompt_index=torch.zeros(1, dtype=torch.long), prompt_tokens=prompt_tokens, prompt_mask=prompt_mask,
                   tokens=tokens, mask=mask, old_logp=torch.zeros_like(mask), texts=(COMPLETION,), group_size=1)


def gap(policy) -> float:
    """max |engine - trainer| log-prob over the fixed completion's tokens."""
    r = fixed_rollout(policy)
    [engine] = policy.sampler.engine.score([r.prompt_tokens[0].tolist()], [r.tokens[0].tolist()])
    with torch.no_grad():
        trainer = policy.logprobs(r)[0].cpu()
    return (engine - trainer).abs().max().item()


def test_sampled_rollout_carries_both_logprobs(trainer):
    policy = trainer.policy
    local = trainer.collect()[1]
    r = local.rollout
    assert r.sampler_logp is not None and r.sampler_logp.shape == r.old_logp.shape == r.tokens.shape
    valid = r.mask.bool()
    assert (r.old_logp - r.sampler_logp)[valid].abs().max().item() < TOL  # same weights, float32
    assert (r.sampler_logp[~valid] == 0).all() and r.entropy is None
    lengths = r.mask.sum(1).long()
    stops = torch.tensor(policy.stop_ids)
    for row, n, cut in zip(r.tokens, lengths, r.truncated):
        ended = bool(torch.isin(row[n - 1], stops))  # a stop token is a response token, as with our sampler
        assert ended != bool(cut) and (n == policy.max_new_tokens or ended)
    assert r.texts[0] == policy.tokenizer.decode(r.tokens[0, :lengths[0]], skip_special_tokens=True)
    again = trainer.policy.sample(local.prompts, 4, torch.Generator().manual_seed(5))
    same = trainer.policy.sample(local.prompts, 4, torch.Generator().manual_seed(5))
    assert torch.equal(again.tokens, same.tokens)  # reproducible from the trainer's generator
    big = trainer.policy.sample(trainer.task.sample_prompts(40), 4, torch.Generator().manual_seed(5))
    assert len(big) == 160  # > 4096 prompt tokens: the engine prefills some prompts in parts


def test_temperature_and_top_k_logprobs_are_of_the_sampling_distribution(trainer):
    from policies.hf.policy import HFPolicy

    policy = trainer.policy
    prompts = trainer.task.sample_prompts(2)
    for temperature, top_k in ((0.7, 0), (1.0, 5)):
        params = attrs.evolve(policy.params, temperature=temperature, top_k=top_k)
        other = HFPolicy(policy.model, policy.tokenizer, params, policy.device, policy.dtype, sampler=policy.sampler)
        r = other.sample(prompts, 4, torch.Generator().manual_seed(1))
        d = (r.old_logp - r.sampler_logp)[r.mask.bool()]  # trainer: logits / temperature, no top-k
        if top_k == 0:
            assert d.abs().max().item() < TOL
        else:  # the engine renormalises over the top 5: its log-probs are larger, by log(top-5 mass)
            assert (d <= TOL).all() and d.min().item() < -1e-2


def test_push_after_training_steps_through_the_trainer(trainer):
    """Acceptance: after updates the engine is measurably stale; sync_sampler pushes, and the
    engine's log-probs of a fixed completion equal the trainer's within 1e-3 again."""
    policy = trainer.policy
    assert gap(policy) < TOL
    for step in range(2):
        rollout = trainer.collect()[1].rollout
        signs = torch.tensor([1.0, -1.0]).repeat(len(rollout) // 2)  # no reward signal at random init: fabricate
        trainer.update(rollout.with_(advantages=signs))  # the trainer's own update: Adam on the policy loss
        before = gap(policy)
        assert before > 2e-2, f"step {step}: the engine should be stale before the push, gap {before:.2e}"
        policy.sync_sampler()  # what train_step calls after the update
        after = gap(policy)
        assert after < TOL, f"step {step}: gap after the push {after:.2e}"
        print(f"step {step}: max |engine - trainer| log-prob before push {before:.3e}, after {after:.3e}")
    assert policy.sampler.pushes == 2  # (a second step also shows the engine does not alias the trainer's tensors)
    r = trainer.collect()[1].rollout
    assert (r.old_logp - r.sampler_logp)[r.mask.bool()].abs().max().item() < TOL


def test_sync_every_k_steps_and_the_mismatch_metrics(trainer):
    policy = trainer.policy
    policy.sampler.params = attrs.evolve(policy.sampler.params, sync_every=2)
    policy.sampler.updates = 0
    start = policy.sampler.pushes
    for _ in range(3):
        trainer.update(trainer.collect()[1].rollout.with_(advantages=torch.tensor([1.0, -1.0]).repeat(6)))
        policy.sync_sampler()
    assert policy.sampler.pushes == start + 1  # after the second step only
    stale = trainer.collect()[1].rollout  # sampled with the weights of step 2, trained to step 3
    from experiments.training.metrics import response_metrics

    m = response_metrics(stale)
    assert m["sampler/logp_abs_diff"].item() > 1e-2 and m["sampler/kl"].item() > 0
    policy.sampler.params = attrs.evolve(policy.sampler.params, sync_every=1)
    policy.sync_sampler()
    m = response_metrics(trainer.collect()[1].rollout)
    assert m["sampler/logp_abs_diff"].item() < 1e-4 and abs(m["sampler/kl"].item()) < 1e-6


def test_lora_policy_pushes_merged_weights(trainer):
    """A LoRA policy on the same checkpoint, sharing the engine: after an update of the adapters
    the engine serves W + (alpha / r) B A."""
    from policies.hf.policy import load_policy

    folder = trainer.policy.sampler.engine.model_path
    params = attrs.evolve(trainer.policy.params, model_path=str(folder), sampler="hf",
                          lora={"r": 4, "alpha": 8.0, "target_modules": "all-linear"})
    lora = load_policy(params, reference=False)
    lora.sampler = trainer.policy.sampler
    lora.sampler.push(lora.causal)  # the base weights (B = 0)
    assert gap(lora) < TOL
    optimizer = torch.optim.Adam(lora.parameters(), lr=5e-2)
    r = fixed_rollout(lora).with_(advantages=torch.ones(1))
    for _ in range(2):
        loss = -(lora.logprobs(r) * r.mask).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    before = gap(lora)
    lora.sampler.push(lora.causal)
    after = gap(lora)
    print(f"LoRA: max |engine - trainer| log-prob before push {before:.3e}, after {after:.3e}")
    assert before > 2e-2 and after < TOL
    trainer.policy.sampler.push(trainer.policy.causal)  # back to the trainer's weights
    assert gap(trainer.policy) < TOL


def test_cli_trains_with_vllm_and_logs_the_mismatch(tmp_path):
    from experiments.training.checkpoint import load_latest

    args = ["policy=tiny-qwen3", "policy.sampler=vllm", "env=arithmetic", "algo=grpo_hadw", "train.steps=3",
            f"policy.model_path={tmp_path / 'cache'}", "policy.warm_start.steps=4", "policy.warm_start.batch_size=8",
            "train.prompts_per_step=4", "train.group_size=4", "train.eval_every=0", "train.progress=false",
            "algo.tis.cap=2.0", f"train.log_dir={tmp_path / 'runs'}", "train.run_name=vllm"]
    out = run_cli(*args, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    _, state = load_latest(tmp_path / "runs" / "vllm")
    history = state["history"]
    assert state["step"] == 3 and len(history) == 3
    adam = state["engine"]["optimizer"]["state"]
    assert adam and all(int(s["step"]) == 3 for s in adam.values())  # three optimizer steps on every weight
    for h in history:
        print({k: f"{v:.3g}" for k, v in h.items() if k.startswith(("sampler/", "loss/tis", "reward/"))})
        assert math.isfinite(h["loss/grad_norm"]) and math.isfinite(h["loss/tis_weight"])
        assert 0 <= h["sampler/logp_abs_diff"] < TOL and h["sampler/logp_max_abs_diff"] < 1e-2
    assert (tmp_path / "runs" / "vllm" / "model" / "config.json").is_file()
