"""Per-step training metrics, computed as tensors and read in one host sync.

Names (TensorBoard tags):
    reward/mean                        mean reward of the batch (over scored responses)
    reward/<name>                      mean of reward function <name> over the responses it scored
    reward/unscorable_frac             responses no reward function scored (advantage 0)
    accuracy/batch[_hard|_medium|_easy] fraction of correct responses, per bucket
    accuracy/[all|hard|medium|easy]    exact success probability over the whole bank
                                       (only where the task knows it exactly: the bandit)
    groups/degenerate_frac             groups with all rewards equal (no gradient)
    groups/all_correct_frac, groups/all_wrong_frac
    bias/[all|hard|medium|easy]        mean (A_hat - A) = p - p_hat over mixed groups
                                       (bandit only: needs the true p)
    adv/abs_mean, adv/weighted_abs_mean
    response/length_*, response/length_level{k}   tokens per response, overall and per level (text policies)
    eval/level{k}, eval/length_level{k}             held-out mean@n and mean length per level
    sampler/logp_abs_diff, sampler/kl   generation engine vs trainer (policy.sampler=vllm)
plus the reweighter's stats (hadw/belief, hadw/eta, phi/correct, phi/incorrect) and the
loss stats (loss/*). Buckets are by *initial* success probability (hard < 1/3 < medium
< 2/3 < easy) so that a prompt keeps its bucket as it is learned.

Leading dimensions are independent runs (the batched simulator): rewards [R, P, G] give
every metric as [R].
"""

from __future__ import annotations

import math

import torch

from algorithms.losses import nan_masked_mean
from rlvr_env.bank import BUCKETS

NUM_BUCKETS = len(BUCKETS)

# Tag names, defined once: the tables, progress bar and comparisons select from these.
REWARD = "reward/mean"
UNSCORABLE = "reward/unscorable_frac"
BATCH_ACCURACY = "accuracy/batch"
EXACT_ACCURACY = ("accuracy/all", *(f"accuracy/{b}" for b in BUCKETS))
"""Exact success probability over the bank, then per bucket (where the task knows it)."""
BIAS = tuple(f"bias/{b}" for b in BUCKETS)
"""Mean A_hat - A over mixed groups per bucket (hard, medium, easy)."""
DEGENERATE = "groups/degenerate_frac"
RARE_SHARE = "modes/rare_share"
BELIEF, GAIN = "hadw/belief", "hadw/eta"  # written by algorithms.reweighters.HADW
PHI = ("phi/correct", "phi/incorrect")  # written by the reweighters
CLIP_FRAC = "loss/clip_frac"
EVAL_ACCURACY = "eval/accuracy"
LEVELS = tuple(range(1, 6))
"""Difficulty levels (arithmetic, MATH)."""
EVAL_LEVELS = tuple(f"eval/level{k}" for k in LEVELS)
"""Held-out mean@n per difficulty level (``experiments.evaluation.evaluator.PeriodicEval``)."""
LENGTH_LEVELS = tuple(f"response/length_level{k}" for k in LEVELS)
"""Mean tokens per response sampled this step, per difficulty level (language models, leveled tasks)."""
EVAL_LENGTH_LEVELS = tuple(f"eval/length_level{k}" for k in LEVELS)
"""Held-out mean tokens per response per difficulty level."""
TOKENS_PER_S = "speed/tokens_per_s"
LOSS, GRAD_NORM = "loss/value", "loss/grad_norm"
SKIPPED_UPDATES = "train/skipped_updates"  # optimizer updates dropped this step (non-finite loss or gradient)
FINAL_ACCURACY = (*EXACT_ACCURACY, BATCH_ACCURACY)
"""What comparisons of runs show (arena, sweeps)."""


def bucket_mean(values: torch.Tensor, valid: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
    """[..., 3] mean of ``values`` [..., N] over entries where ``valid`` [..., N], per bucket
    ``buckets`` [..., N]; NaN if empty."""
    runs = values.shape[:-1]
    w = valid.to(values.dtype)
    # One bucket slot per (run, bucket): run r's bucket b is slot 3 r + b.
    slots = (buckets + NUM_BUCKETS * torch.arange(math.prod(runs)).view(*runs, 1)).reshape(-1)
    sums = torch.zeros(NUM_BUCKETS * math.prod(runs), dtype=values.dtype).index_add_(0, slots, (values * w).reshape(-1))
    counts = torch.zeros_like(sums).index_add_(0, slots, w.expand_as(values).reshape(-1))
    means = torch.where(counts > 0, sums / counts.clamp_min(1.0), torch.full_like(sums, math.nan))
    return means.view(*runs, NUM_BUCKETS)


def group_metrics(
    rewards: torch.Tensor,
    advantages: torch.Tensor,
    weighted: torch.Tensor,
    buckets: torch.Tensor,
    p_true: torch.Tensor | None,
    scored: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Metrics of one step's groups.

    Args:
        rewards: [..., P, G]; advantages / weighted: [..., P, G] before / after reweighting;
        buckets: [..., P] bucket index by initial p; p_true: [..., P] exact success probability
        at sampling time, or None where the task does not know it; scored: [..., P, G] bool,
        the responses a reward function scored (None: all; the rewards of the others are
        their group's scored mean, ``experiments.training.groups.fill_unscorable``).
    Returns:
        name -> [...] (0-dim for one run).
    """
    groups = (-2, -1)
    p_hat = rewards.mean(dim=-1)  # (..., P)
    lo, hi = rewards.min(dim=-1).values, rewards.max(dim=-1).values
    degenerate = lo == hi  # (..., P)
    correct = (rewards > 0.5).float()  # (..., P, G)
    m = {
        REWARD: rewards.mean(dim=groups) if scored is None else nan_masked_mean(rewards, scored, dim=groups),
        BATCH_ACCURACY: correct.mean(dim=groups) if scored is None else nan_masked_mean(correct, scored, dim=groups),
        DEGENERATE: degenerate.float().mean(dim=-1),
        "groups/all_correct_frac": (lo > 0.5).float().mean(dim=-1),
        "groups/all_wrong_frac": (hi <= 0.5).float().mean(dim=-1),
        "adv/abs_mean": advantages.abs().mean(dim=groups),
        "adv/weighted_abs_mean": weighted.abs().mean(dim=groups),
    }
    if scored is None:
        acc = bucket_mean(correct.mean(dim=-1), torch.ones_like(p_hat, dtype=torch.bool), buckets)
    else:
        acc = bucket_mean(nan_masked_mean(correct, scored, dim=-1).nan_to_num(0.0), scored.any(-1), buckets)
    for i, name in enumerate(BUCKETS):
        m[f"{BATCH_ACCURACY}_{name}"] = acc[..., i]
    if p_true is not None:
        # A_hat - A = (r - p_hat) - (r - p) = p - p_hat, the same for every response.
        gap = p_true.to(rewards.dtype) - p_hat
        mixed = ~degenerate
        m["bias/all"] = nan_masked_mean(gap, mixed, dim=-1)
        per_bucket = bucket_mean(gap, mixed, buckets)
        for i, tag in enumerate(BIAS):
            m[tag] = per_bucket[..., i]
    return m


def function_rewards(by_function: dict[str, torch.Tensor], rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """``reward/<name>``: each reward function's mean over the responses it scored (NaN: none),
    and the fraction of ``rewards`` [..., N, G] no function scored (where the task has functions)."""
    if not by_function:
        return {}
    groups = (-2, -1)
    m = {f"reward/{name}": nan_masked_mean(v, ~torch.isnan(v), dim=groups) for name, v in by_function.items()}
    m[UNSCORABLE] = torch.isnan(rewards).float().mean(dim=groups)
    return m


def exact_accuracy(p_all: torch.Tensor, buckets_all: torch.Tensor) -> dict[str, torch.Tensor]:
    """Exact accuracy over the whole bank (``p_all``, ``buckets_all`` [..., N]), overall and per bucket."""
    m = {EXACT_ACCURACY[0]: p_all.mean(dim=-1)}
    per_bucket = bucket_mean(p_all, torch.ones_like(p_all, dtype=torch.bool), buckets_all)
    for i, tag in enumerate(EXACT_ACCURACY[1:]):
        m[tag] = per_bucket[..., i]
    return m


def to_host(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """The one host sync per step: stack every scalar and read them together."""
    keys = list(metrics)
    values = torch.stack([metrics[k].detach().float().cpu().reshape(()) for k in keys]).tolist()
    return dict(zip(keys, values))


def response_metrics(rollout) -> dict[str, torch.Tensor]:
    """Lengths of every response sampled this step (all filter rounds); for text policies also
    the truncated fraction and the mean per-token entropy of the sampling distribution.

        response/length_mean, response/length_max   tokens per response
        response/truncated_frac                      cut at the generation budget (no stop token)
        response/entropy                             mean over response tokens

    and, where a separate engine sampled (``rollout.sampler_logp``: vLLM), its mismatch with
    the trainer over response tokens, d = old_logp - sampler_logp = log(pi_trainer / pi_sampler):

        sampler/logp_abs_diff, sampler/logp_max_abs_diff   mean and max |d|
        sampler/kl                                          mean exp(d) - d - 1: the k3 estimate of
                                                            KL(pi_sampler || pi_trainer) (>= 0)
    """
    lengths = rollout.mask.sum(dim=1)  # (B,)
    m = {"response/length_mean": lengths.float().mean(), "response/length_max": lengths.max().float()}
    if rollout.truncated is not None:
        m["response/truncated_frac"] = rollout.truncated.float().mean()
    if rollout.entropy is not None:
        m["response/entropy"] = nan_masked_mean(rollout.entropy, rollout.mask)
    if rollout.sampler_logp is not None:
        valid = rollout.mask.bool()
        d = torch.where(valid, rollout.old_logp - rollout.sampler_logp, torch.zeros(()))  # (B, T)
        m["sampler/logp_abs_diff"] = nan_masked_mean(d.abs(), valid)
        m["sampler/logp_max_abs_diff"] = d.abs().max()
        m["sampler/kl"] = nan_masked_mean(torch.expm1(d) - d, valid)
    return m


def problem_levels(task) -> torch.Tensor | None:
    """[N] difficulty level (1-5, 0: none) of each of ``task``'s problems, or None where none has one
    (the bandit, an unleveled JSONL file)."""
    problems = getattr(task, "problems", None)
    if not problems or not any(getattr(p, "difficulty", None) in LEVELS for p in problems):
        return None
    return torch.tensor([p.difficulty if p.difficulty in LEVELS else 0 for p in problems], dtype=torch.long)


def level_lengths(rollout, levels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``response/length_level{k}``: mean tokens per response of this step's level-k prompts, for
    every level the task has (NaN: none sampled this step); ``levels`` [N] from ``problem_levels``.
    Language models only: an answer-table policy (tabular, loglinear: no prompt tokens) answers
    with one token."""
    if levels is None or rollout.prompt_tokens.shape[1] == 0:
        return {}
    lengths = rollout.mask.sum(dim=1).float()  # (B,)
    level = levels.to(lengths.device)[rollout.prompt_index.to(lengths.device)]  # (B,)
    return {LENGTH_LEVELS[k - 1]: nan_masked_mean(lengths, level == k) for k in levels.unique().tolist() if k in LEVELS}


def speed_metrics(timing: dict[str, float], lengths: torch.Tensor) -> dict[str, float]:
    """Wall-clock seconds per phase (``time/*``) and generated tokens per second of sampling
    (``speed/tokens_per_s``). Read from the host clock: never part of the history."""
    tokens = float(lengths.sum())
    sampling = timing.get("time/sample_s", 0.0)
    return {**timing, TOKENS_PER_S: tokens / sampling if sampling > 0 else math.nan}


def reweight_weights(advantages: torch.Tensor, weighted: torch.Tensor) -> torch.Tensor:
    """[n] the reweighting factors A' / A of every response with a non-zero advantage (for a histogram)."""
    nonzero = advantages != 0
    return (weighted[nonzero] / advantages[nonzero]).flatten()
