"""What every training task shares: a bank of prompts with known correct answers.

A task fills ``texts`` [N], ``candidates`` [N][K] (answer texts), ``correct`` [N, K] (which
of the K candidate answers are right) and ``initial_logits`` [N, K] (the tabular policy's
start), and gets seeded prompt sampling, difficulty buckets by initial success probability
and exact success probabilities under policies that expose their answer distribution: it
implements ``rlvr_env.protocol.ExactTask``.
"""

from __future__ import annotations

import numpy as np
import torch

from policies.base import AnswerDistribution, PromptBatch

# Difficulty buckets by initial success probability.
BUCKETS = ("hard", "medium", "easy")
HARD_BELOW, EASY_ABOVE = 1.0 / 3.0, 2.0 / 3.0


def bucket_of(p: torch.Tensor) -> torch.Tensor:
    """[P] bucket index: 0 hard (p < 1/3), 1 medium, 2 easy (p > 2/3)."""
    return (p >= HARD_BELOW).long() + (p > EASY_ABOVE).long()


class PromptSampler:
    """Seeded prompt sampling over ``texts`` [N], difficulty ``buckets`` [N], resumable state."""

    name = "prompts"

    def __init__(self, texts: tuple[str, ...], buckets: torch.Tensor, seed: int):
        self.texts = texts
        self.buckets = buckets
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.texts)

    def sample_prompts(self, num: int) -> PromptBatch:
        """``num`` distinct prompts (with replacement across steps)."""
        if num > len(self):
            raise ValueError(f"train.prompts_per_step ({num}) exceeds the bank size ({len(self)})")
        index = torch.as_tensor(self.rng.choice(len(self), size=num, replace=False), dtype=torch.long)
        return PromptBatch(index=index, texts=tuple(self.texts[i] for i in index.tolist()))

    def bucket(self, prompts: PromptBatch) -> torch.Tensor:
        """[P] difficulty bucket of each prompt."""
        return self.buckets[prompts.index]

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


class PromptBank(PromptSampler):
    """Prompts with K candidate answers each, of known correctness: buckets by initial
    success probability and exact success probabilities (an ``ExactTask``).

    Attributes:
        texts: [N] prompt strings; candidates: [N][K] answer texts; correct: [N, K] bool;
        initial_logits: [N, K]; initial_p: [N] initial success probabilities; buckets: [N] by initial p.
    """

    name = "bank"

    def __init__(self, texts: tuple[str, ...], candidates, correct: torch.Tensor, initial_logits: torch.Tensor, seed: int):
        self.candidates = tuple(tuple(c) for c in candidates)
        self.correct = correct
        self.initial_logits = initial_logits
        self.initial_p = torch.softmax(initial_logits, -1).mul(correct).sum(-1)
        super().__init__(texts, bucket_of(self.initial_p), seed)

    def success_probability(self, policy: AnswerDistribution, prompt_index: torch.Tensor | None = None) -> torch.Tensor:
        """[P] exact p_i under a policy that exposes its answer distribution (tabular), all
        prompts when ``prompt_index`` is None."""
        correct = self.correct if prompt_index is None else self.correct[prompt_index]
        return (policy.probs(prompt_index) * correct).sum(-1)

    def policy_metrics(self, policy: AnswerDistribution) -> dict[str, torch.Tensor]:
        """Exact facts about the policy over the whole bank (none by default)."""
        return {}
