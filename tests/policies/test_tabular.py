import torch

from algorithms import AGGREGATIONS, LOSSES
from policies import PromptBatch, TabularParams, TabularPolicy


def make_policy(n=5, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float32)
    return TabularPolicy(TabularParams(num_prompts=n, num_answers=k), logits)


def test_sample_shapes_and_logprobs():
    policy = make_policy()
    prompts = PromptBatch(index=torch.tensor([3, 0, 4]), texts=("a", "b", "c"))
    roll = policy.sample(prompts, 6, torch.Generator().manual_seed(1))
    assert roll.tokens.shape == (18, 1) and roll.mask.shape == (18, 1)
    assert torch.equal(roll.prompt_index, torch.tensor([3] * 6 + [0] * 6 + [4] * 6))
    expected = torch.log_softmax(policy.logits.detach(), -1)[roll.prompt_index, roll.tokens[:, 0]]
    assert torch.allclose(roll.old_logp[:, 0], expected)
    assert torch.allclose(policy.logprobs(roll).detach(), roll.old_logp)


def test_sample_frequencies_match_probabilities():
    policy = make_policy(n=2, k=3)
    prompts = PromptBatch(index=torch.tensor([0, 1]), texts=("a", "b"))
    roll = policy.sample(prompts, 200_000, torch.Generator().manual_seed(0))
    answers = roll.tokens[:, 0].view(2, -1)
    freq = torch.stack([torch.bincount(answers[i], minlength=3) for i in range(2)]).float() / 200_000
    probs = policy.probs()
    # binomial standard error <= sqrt(0.25 / 2e5) ~ 1.1e-3; 5 SE
    assert torch.allclose(freq, probs, atol=5.6e-3)


def test_loss_gradient_equals_analytic_policy_gradient():
    """grad of seq_mean(ppo_clip) at ratio 1 = -(1/B) sum_b A_b (onehot(a_b) - pi(.|i_b))."""
    torch.manual_seed(0)
    policy = make_policy(n=6, k=5)
    prompts = PromptBatch(index=torch.tensor([1, 4, 2]), texts=("", "", ""))
    roll = policy.sample(prompts, 8, torch.Generator().manual_seed(3))
    adv = torch.randn(roll.tokens.shape[0], 1)
    loss_fn = LOSSES.build({"name": "ppo_clip"})
    aggregate = AGGREGATIONS.build({"name": "seq_mean_token_mean"})
    per_token, _ = loss_fn(policy.logprobs(roll), roll.old_logp, adv, roll.mask)
    aggregate(per_token, roll.mask).backward()

    probs = policy.probs()
    analytic = torch.zeros_like(probs)
    batch = roll.tokens.shape[0]
    for b in range(batch):
        i, a = roll.prompt_index[b].item(), roll.tokens[b, 0].item()
        onehot = torch.nn.functional.one_hot(torch.tensor(a), probs.shape[1]).float()
        analytic[i] -= adv[b, 0] * (onehot - probs[i]) / batch
    assert torch.allclose(policy.logits.grad, analytic, atol=1e-6)
    untouched = [0, 3, 5]
    assert torch.equal(policy.logits.grad[untouched], torch.zeros(3, 5))
