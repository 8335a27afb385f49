"""The log-linear policy (policy=loglinear): shapes and normalisation for any sharing, the
tabular policy exactly at sharing 0, first-order transfer between prompts at sharing 1, and
invalid params refused at build time naming the field."""

import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms import ConfigError, build_algorithm
from algorithms.aggregation import Totals
from experiments.training.build import build_trainer, compose_config
from policies import POLICIES, LogLinearPolicy, PromptBatch, Rollout, TabularParams, TabularPolicy
from policies.loglinear import skill_mixture
from rlvr_env.bandit import BanditParams, BanditTask

GRPO = {"name": "grpo", "advantage": {"name": "group_norm"}, "loss": {"name": "ppo_clip"},
        "aggregation": {"name": "seq_mean_token_mean"}}


def make_policy(n=6, k=5, skills=3, sharing=0.5, seed=0, logits=None):
    if logits is None:
        logits = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    return LogLinearPolicy(TabularParams(num_prompts=n, num_answers=k), sharing,
                           skill_mixture(n, skills, 0.5, seed), logits)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 10), k=st.integers(2, 7), skills=st.integers(1, 5), seed=st.integers(0, 10_000),
       sharing=st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0)), group=st.integers(1, 5))
def test_shapes_and_probabilities_sum_to_one(n, k, skills, seed, sharing, group):
    policy = make_policy(n, k, skills, sharing, seed)
    probs = policy.probs()
    assert probs.shape == (n, k) and policy.logit_table().shape == (n, k) and policy.ref_logits.shape == (n, k)
    assert (probs >= 0).all() and torch.allclose(probs.sum(-1), torch.ones(n), atol=1e-5)
    assert set(policy.weights()) == {0.0: {"per_prompt"}, 1.0: {"theta"}}.get(sharing, {"per_prompt", "theta"})
    index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: max(1, n // 2)]
    assert torch.allclose(policy.probs(index), probs[index])
    roll = policy.sample(PromptBatch(index=index, texts=("",) * len(index)), group, torch.Generator().manual_seed(seed))
    b = len(index) * group
    assert roll.tokens.shape == roll.old_logp.shape == (b, 1) and len(roll.texts) == b
    assert ((roll.tokens >= 0) & (roll.tokens < k)).all()
    logp = policy.logprobs(roll)
    assert logp.shape == (b, 1) and logp.requires_grad and torch.allclose(logp.detach(), roll.old_logp)
    assert torch.allclose(policy.ref_logprobs(roll), roll.old_logp)  # no update yet: the reference is the policy


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 10), k=st.integers(2, 7), skills=st.integers(1, 5), seed=st.integers(0, 10_000),
       sharing=st.floats(0.0, 0.95))
def test_below_full_sharing_the_initial_policy_is_the_tasks(n, k, skills, seed, sharing):
    logits = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    table = make_policy(n, k, skills, sharing, seed, logits).logit_table().detach()
    assert torch.allclose(table, logits, atol=1e-4)  # the per-prompt terms absorb what the skills do not fit


def test_full_sharing_starts_from_the_best_shared_fit():
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    policy = make_policy(8, 4, skills=2, sharing=1.0, logits=logits)
    residual = logits - logits.mean(-1, keepdim=True) - policy.logit_table().detach()
    # least squares: the residual is orthogonal to every skill column of M
    assert torch.allclose(policy.mixing.T @ residual, torch.zeros(2, 4), atol=1e-4)


def test_sharing_zero_is_the_tabular_policy_bit_for_bit():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    loglinear = make_policy(6, 5, sharing=0, logits=logits)
    tabular = TabularPolicy(TabularParams(num_prompts=6, num_answers=5), logits)
    assert [p.shape for p in loglinear.parameters()] == [(6, 5)]  # no shared parameter exists
    assert torch.equal(next(loglinear.parameters()), tabular.logits) and torch.equal(loglinear.ref_logits, tabular.ref_logits)
    prompts = PromptBatch(index=torch.tensor([4, 1, 1, 3]), texts=("",) * 4)
    rolls = [p.sample(prompts, 5, torch.Generator().manual_seed(3)) for p in (loglinear, tabular)]
    assert torch.equal(rolls[0].tokens, rolls[1].tokens) and torch.equal(rolls[0].old_logp, rolls[1].old_logp)
    adv = torch.randn(20, generator=torch.Generator().manual_seed(4))
    algo = build_algorithm(GRPO)
    for policy, roll in zip((loglinear, tabular), rolls):
        roll = roll.with_(advantages=adv)
        loss, _ = algo.objective(policy.logprobs(roll), roll, Totals.of(roll.mask))
        loss.backward()
    assert torch.equal(next(loglinear.parameters()).grad, tabular.logits.grad)


def trainer_for(*overrides, steps=50):
    return build_trainer(compose_config(*overrides, f"train.steps={steps}", "train.progress=false"), Path(tempfile.mkdtemp()))


def history(*overrides):
    trainer = trainer_for(*overrides)
    return trainer.train(), trainer.policy


@pytest.mark.parametrize("extra", [(), ("algo=grpo", "algo.kl.beta=0.05", "train.minibatches=2", "optim.max_grad_norm=0.5")],
                         ids=["grpo_hadw", "kl_minibatches_clip"])
def test_a_training_run_at_sharing_zero_gives_the_tabular_numbers(extra):
    tabular, table = history("policy=tabular", "seed=3", *extra)
    loglinear, policy = history("policy=loglinear", "policy.sharing=0", "seed=3", *extra)
    assert loglinear == tabular  # every metric of every step, exactly
    assert torch.equal(policy.logit_table(), table.logits)


def test_sharing_moves_the_numbers():
    """The same initial policy as the tabular run, other numbers once prompts share parameters."""
    tabular, shared = (trainer_for(*o, "seed=3", steps=5) for o in (["policy=tabular"], ["policy=loglinear"]))
    p0 = [t.task.success_probability(t.policy) for t in (tabular, shared)]
    assert torch.allclose(p0[0], p0[1], atol=1e-5)
    assert shared.train()[-1]["accuracy/all"] != tabular.train()[-1]["accuracy/all"]


def one_prompt_update(sharing: float, lr: float, prompt: int = 0):
    """A GRPO update on one group of ``prompt`` (SGD, step ``lr``, float64): the success
    probabilities before and after, and the first-order prediction -lr grad p_j . grad L."""
    task = BanditTask(BanditParams(num_prompts=12, num_answers=6), seed=0)
    policy = make_policy(12, 6, skills=3, sharing=sharing, logits=task.initial_logits).double()
    correct = task.correct.double()
    right, wrong = task.correct[prompt].nonzero()[0, 0], (~task.correct[prompt]).nonzero()[:, 0]
    answers = torch.stack([right, right, wrong[0], wrong[1], wrong[2], right])  # a mixed group, G = 6
    rewards = correct[prompt, answers][None]  # (1, G)
    index = torch.full((6,), prompt)
    logp = torch.log_softmax(policy.logit_table()[prompt], -1)[answers].detach()[:, None]
    algo = build_algorithm(GRPO)
    roll = Rollout(prompt_index=index, prompt_tokens=torch.zeros(6, 0, dtype=torch.long), prompt_mask=torch.zeros(6, 0),
                   tokens=answers[:, None], mask=torch.ones(6, 1, dtype=torch.float64), old_logp=logp,
                   texts=("",) * 6, group_size=6, advantages=algo.advantage(rewards).reshape(-1).double())
    weights = list(policy.parameters())
    loss, _ = algo.objective(policy.logprobs(roll), roll, Totals.of(roll.mask))
    grad_loss = torch.autograd.grad(loss, weights)
    p_fn = lambda: (torch.softmax(policy.logit_table(), -1) * correct).sum(-1)  # noqa: E731  (N,) with grad
    jacobian = torch.autograd.functional.jacobian(lambda *w: p_of(policy, correct, w), tuple(weights))
    predicted = -lr * sum((j.flatten(1) * g.flatten()).sum(1) for j, g in zip(jacobian, grad_loss))  # (N,)
    before = p_fn().detach()
    optimizer = torch.optim.SGD(weights, lr=lr)
    for w, g in zip(weights, grad_loss):
        w.grad = g
    optimizer.step()
    return before, p_fn().detach(), predicted, torch.cat([g.flatten() for g in grad_loss]).norm()


def p_of(policy, correct, weights):
    names = list(policy.weights())
    return (torch.softmax(policy.logit_table(dict(zip(names, weights))), -1) * correct).sum(-1)


def test_at_full_sharing_an_update_on_one_prompt_moves_the_others_as_the_gradient_predicts():
    errors = []
    for lr in (0.2, 0.1, 0.05):
        before, after, predicted, grad_norm = one_prompt_update(1.0, lr)
        delta = after - before
        others = delta[1:]
        assert others.abs().min() > 0 and others.abs().max() > 1e-3 * lr  # other prompts move, measurably
        error = (delta - predicted).abs().max()
        assert error <= lr**2 * grad_norm**2  # second order: |dp - lr J g| <= (lr |g|)^2 |Hessian| / 2, |Hessian| <= 2
        errors.append(error)
    assert 3.0 < errors[0] / errors[1] < 5.0 and 3.0 < errors[1] / errors[2] < 5.0  # O(lr^2): halving lr quarters it


def test_without_sharing_an_update_on_one_prompt_leaves_the_others_exactly():
    before, after, predicted, _ = one_prompt_update(0.0, 0.1)
    assert torch.equal(after[1:], before[1:]) and torch.equal(predicted[1:], torch.zeros(11, dtype=torch.float64))
    assert after[0] > before[0]  # the updated prompt learns


@pytest.mark.parametrize("field, value, message", [
    ("sharing", 1.5, "policy.sharing: must be in [0.0, 1.0], got 1.5"),
    ("sharing", -0.1, "policy.sharing: must be in [0.0, 1.0], got -0.1"),
    ("skills", 0, "policy.skills: must be >= 1, got 0"),
    ("concentration", 0.0, "policy.concentration: must be > 0.0, got 0.0"),
    ("init", "random", "policy.init: must be one of task, uniform; got 'random'"),
    ("seed", -1, "policy.seed: must be >= 0, got -1"),
])
def test_invalid_params_are_refused_at_build_time_naming_the_field(field, value, message):
    with pytest.raises(ConfigError) as caught:
        POLICIES.build({"name": "loglinear", field: value}, "policy")
    assert str(caught.value) == message and "\n" not in str(caught.value)


def test_a_task_without_candidates_is_refused_naming_the_policy():
    class NoCandidates:
        name = "math500"

    with pytest.raises(ConfigError, match="policy=loglinear needs a task with candidate answers"):
        POLICIES.build({"name": "loglinear"}, "policy")(NoCandidates())
