"""The bandit problem source: P prompts, K candidate answers, a known correct subset.

Each prompt i has a success probability p_i = sum of pi(a | i) over its correct answers.
Initial p_i are drawn from a configurable distribution spanning (0, 1), and the
correct mass is split into modes (one common, one rare), so that both the Theorem-1
bias (which depends on p) and F-GRPO's rare-mode effect show up. Because p_i is known
exactly at every step, the trainer logs the true advantage A = r - p beside A_hat.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch

from algorithms.registry import FieldError, between, integer, one_of
from policies.base import AnswerDistribution, PromptBatch, Rollout
from rlvr_env.bank import PromptBank


def _p_range(inst, attribute, value):
    lo, hi = value
    if not 0.0 < lo < hi < 1.0:
        raise FieldError(attribute.name, f"must satisfy 0 < low < high < 1, got {list(value)}")


def _positive_pair(inst, attribute, value):
    if len(value) != 2 or min(value) <= 0:
        raise FieldError(attribute.name, f"must be two positive numbers [a, b], got {list(value)}")


@attrs.frozen
class BanditParams:
    num_prompts: int = attrs.field(default=256, validator=integer(1))
    """Number of prompts in the bank."""
    num_answers: int = attrs.field(default=16, validator=integer(2))
    """K: candidate answers per prompt."""
    correct_answers: int = attrs.field(default=2, validator=integer(1))
    """Correct answers per prompt (modes); must be < num_answers."""
    rare_mode_share: float = attrs.field(default=0.1, validator=between(0.0, 1.0))
    """Share of a prompt's correct mass on its rarest correct answer (with >= 2 modes)."""
    difficulty: str = attrs.field(default="uniform", validator=one_of("uniform", "beta"))
    """Distribution of initial success probabilities: uniform on p_range, or Beta(a, b)."""
    p_range: tuple[float, float] = attrs.field(default=(0.02, 0.98), converter=tuple, validator=_p_range)
    """Initial p is clipped into [low, high] (both inside (0, 1))."""
    beta: tuple[float, float] = attrs.field(default=(1.0, 1.0), converter=tuple, validator=_positive_pair)
    """(a, b) of the Beta distribution when difficulty = beta."""
    seed: int | None = None
    """Seed of the bank itself (None: the run's seed)."""

    def __attrs_post_init__(self):
        if self.correct_answers >= self.num_answers:
            raise FieldError("correct_answers", f"must be < num_answers ({self.num_answers}), got {self.correct_answers}")


class BanditTask(PromptBank):
    """A bank of bandit prompts; samples P prompts per step and scores answers exactly.

    ``initial_logits`` [N, K] give each prompt its drawn initial p; ``rare_answer`` [N] is
    the index of its rare correct mode (None with a single correct answer).
    """

    name = "bandit"

    def __init__(self, params: BanditParams, seed: int):
        self.params = params
        bank_rng = np.random.default_rng(params.seed if params.seed is not None else seed)
        n, k, c = params.num_prompts, params.num_answers, params.correct_answers
        lo, hi = params.p_range
        if params.difficulty == "uniform":
            p = bank_rng.uniform(lo, hi, size=n)
        else:
            p = np.clip(bank_rng.beta(*params.beta, size=n), lo, hi)
        # Correct modes: the last one is rare, the others share the rest equally.
        shares = np.full(c, 1.0 / c) if c == 1 else np.r_[np.full(c - 1, (1 - params.rare_mode_share) / (c - 1)), params.rare_mode_share]
        wrong_split = bank_rng.dirichlet(np.ones(k - c), size=n)  # (N, K - C)
        mass = np.concatenate([p[:, None] * shares[None, :], (1 - p)[:, None] * wrong_split], axis=1)  # (N, K)
        # Shuffle answer positions per prompt so that index carries no information.
        order = np.argsort(bank_rng.random((n, k)), axis=1)
        mass = np.take_along_axis(mass, order, axis=1)
        correct = np.take_along_axis(np.arange(k)[None, :] < c, order, axis=1)
        logits = torch.as_tensor(np.log(np.maximum(mass, 1e-12)), dtype=torch.float32)
        answers = tuple(str(a) for a in range(k))  # a response is the chosen answer's index, as text
        super().__init__(tuple(f"bandit prompt {i}" for i in range(n)), (answers,) * n, torch.as_tensor(correct), logits, seed)
        self._answer_index = {text: a for a, text in enumerate(answers)}
        self.rare_answer = torch.as_tensor(order.argsort(axis=1)[:, c - 1]) if c > 1 else None

    def rewards(self, prompts: PromptBatch, rollout: Rollout) -> torch.Tensor:
        """[P, G] binary rewards: 1 where the answer (its index as text, "0".."K-1") is correct;
        any other text scores 0."""
        answers = torch.tensor([self._answer_index.get(t, -1) for t in rollout.texts])  # (B,)
        r = self.correct[rollout.prompt_index, answers.clamp_min(0)] & (answers >= 0)
        return r.float().view(len(prompts), rollout.group_size)

    def policy_metrics(self, policy: AnswerDistribution) -> dict[str, torch.Tensor]:
        """Exact facts about the policy over the whole bank (logged every step).

        ``modes/rare_share``: mean over prompts of pi(rare correct answer) / p, the share of
        the correct mass on the rare mode (initially ``rare_mode_share``). F-GRPO's claim
        is that group-relative updates shrink it while p grows.

        Written for leading run dimensions: the batched simulator calls it on the R runs'
        banks stacked into one (``correct`` [R, N, K], ``rare_answer`` [R, N]) and a policy
        whose ``probs()`` is [R, N, K]; every metric is then [R].
        """
        if self.rare_answer is None:
            return super().policy_metrics(policy)
        probs = policy.probs()  # (N, K)
        return {"modes/rare_share": rare_mode_share(probs, (probs * self.correct).sum(-1), self.rare_answer)}


def rare_mode_share(probs: torch.Tensor, p: torch.Tensor, rare_answer: torch.Tensor) -> torch.Tensor:
    """[...] mean over prompts of pi(rare correct answer) / p, from ``probs`` [..., N, K], the
    success probabilities ``p`` [..., N] and ``rare_answer`` [..., N] (leading dims: runs)."""
    rare = probs.gather(-1, rare_answer[..., None]).squeeze(-1)  # (..., N)
    return (rare / p.clamp_min(1e-12)).mean(dim=-1)
