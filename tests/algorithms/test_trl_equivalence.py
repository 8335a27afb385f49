"""Our loss and gradient on the transformers backend equal TRL's GRPOTrainer (trl 1.16).

Same tiny model, prompts, completions and rewards on both sides. TRL generates nothing: its
``_generate_single_turn`` returns our sampled completion ids, so its own code tokenizes the
prompts (chat template), pads, computes advantages from the rewards and the loss. Settings
that make the two define the same objective:

* advantages: TRL divides by (std + 1e-4) with Bessel's correction (``nanstd``); ours
  ``group_norm`` with ``eps=1e-4``. Dr.GRPO: TRL ``scale_rewards="none"``, ours ``group_mean``.
* aggregation: ``grpo`` = mean over each response's tokens, then over responses (ours
  ``seq_mean_token_mean``); ``dr_grpo`` = token sum / (B * max_completion_length) (ours
  ``seq_mean_token_sum_norm`` with L_max = max_new_tokens = max_completion_length);
  ``dapo`` = token sum / tokens in the batch (``num_items_in_batch``, one process, one
  accumulation step; ours ``token_mean``).
* beta = 0 (no reference model), temperature 1, one process, gradient accumulation 1. DAPO's
  dynamic sampling and overlong shaping act on rewards before the loss and are not part of
  TRL's ``loss_type``; they are left out on both sides.
* old log-probs: on-policy (TRL uses the detached current log-probs; ours recomputes them,
  ratio 1) and off-policy (the same perturbed old log-probs given to both), so that clipping
  (0.2 / 0.2, DAPO 0.2 / 0.28) is exercised.
"""

import copy

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from algorithms.aggregation import Totals  # noqa: E402
from experiments.training.build import compose_config  # noqa: E402
from algorithms import build_algorithm  # noqa: E402
from tests.hf_fixtures import arithmetic_prompts, make_policy, tiny_dir  # noqa: E402,F401

P, G, MAX_NEW = 3, 4, 10
LOSS_TYPES = {  # ours -> TRL (loss_type, scale_rewards, epsilon_high)
    "grpo": ("grpo", "group", 0.2),
    "dr_grpo": ("dr_grpo", "none", 0.2),
    "dapo": ("dapo", "group", 0.28),
}


def trl_trainer(model, tokenizer, loss_type: str, scale_rewards: str, eps_high: float, rewards: list[float],
                out_dir):
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=str(out_dir), per_device_train_batch_size=P * G, num_generations=G,
                      max_completion_length=MAX_NEW, loss_type=loss_type, scale_rewards=scale_rewards, beta=0.0,
                      epsilon=0.2, epsilon_high=eps_high, temperature=1.0, use_cpu=True, bf16=False,
                      report_to=[], logging_steps=1, disable_dropout=True)
    dataset = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "x"}]}])
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: list(rewards), args=args,
                          train_dataset=dataset, processing_class=tokenizer)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    return trainer


def our_loss_and_grads(policy, algo, rollout, rewards: torch.Tensor):
    policy.causal.zero_grad(set_to_none=True)
    advantages = algo.advantage(rewards.view(P, G)).reshape(-1)  # (B,)
    mb = rollout.with_(advantages=advantages)
    loss, _ = algo.objective(policy.logprobs(mb), mb, Totals.of(mb.mask))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in policy.causal.named_parameters()}


@pytest.mark.parametrize("off_policy", [False, True], ids=["on_policy", "off_policy"])
@pytest.mark.parametrize("ours", list(LOSS_TYPES))
def test_loss_and_gradient_equal_trl(tiny_dir, tmp_path, ours, off_policy):  # noqa: F811
    loss_type, scale_rewards, eps_high = LOSS_TYPES[ours]
    policy = make_policy(tiny_dir, max_new_tokens=MAX_NEW)
    prompts = arithmetic_prompts(P, seed=3)
    rollout = policy.sample(prompts, G, torch.Generator().manual_seed(0))
    assert rollout.mask.sum(1).min() < rollout.mask.sum(1).max()  # uneven lengths: aggregation matters
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.5, 0.0])  # one degenerate group
    if off_policy:  # the same stale log-probs on both sides: ratios well outside [0.8, 1.28]
        noise = 0.4 * torch.randn(rollout.old_logp.shape, generator=torch.Generator().manual_seed(1))
        rollout = rollout.with_(old_logp=(rollout.old_logp + noise) * rollout.mask)

    cfg = compose_config(f"algo={ours}", f"policy.max_new_tokens={MAX_NEW}")
    if cfg["algo"]["advantage"]["name"] == "group_norm":
        cfg["algo"]["advantage"]["eps"] = 1e-4  # TRL: std + 1e-4
    algo = build_algorithm(cfg["algo"])
    our_loss, our_grads = our_loss_and_grads(policy, algo, rollout, rewards)

    trainer = trl_trainer(copy.deepcopy(policy.causal), policy.tokenizer, loss_type, scale_rewards, eps_high,
                          rewards.tolist(), tmp_path)
    completions = [row[m.bool()].tolist() for row, m in zip(rollout.tokens, rollout.mask)]
    trainer._generate_single_turn = lambda prompt_ids, *a, **k: (completions, None)
    inputs = [{"prompt": [{"role": "user", "content": t}]} for t in prompts.texts for _ in range(G)]
    batch = trainer._generate_and_score_completions(inputs)
    assert torch.equal(batch["completion_ids"] * batch["completion_mask"], rollout.tokens * rollout.mask.long())
    prompt_ids = batch["prompt_ids"][batch["prompt_mask"].bool()]
    assert torch.equal(prompt_ids, rollout.prompt_tokens[rollout.prompt_mask.bool()])  # the same chat-templated prompts
    if off_policy:
        batch["old_per_token_logps"] = rollout.old_logp
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    trl_grads = {n: p.grad for n, p in trainer.model.named_parameters()}

    torch.testing.assert_close(our_loss, trl_loss.detach(), atol=1e-5, rtol=0)
    if off_policy:  # on-policy GRPO's loss value is exactly 0 (advantages sum to 0 per group); its gradient is not
        assert our_loss.abs() > 1e-3
    assert set(trl_grads) == set(our_grads)
    for name, grad in our_grads.items():
        torch.testing.assert_close(grad, trl_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    total = torch.cat([g.flatten() for g in our_grads.values()]).abs().max()
    assert total > 1e-3
