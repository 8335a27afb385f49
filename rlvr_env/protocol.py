"""What the trainer may call on a task, as typed protocols (checked once at build time).

``Task`` is every problem source: prompts, rewards from the completions' *text*, difficulty
buckets, and a resumable state. ``ExactTask`` is a task that also knows which of K candidate
answers are correct, so that under a policy exposing its whole answer distribution
(``policies.base.AnswerDistribution``: the tabular policy) it gives the exact success
probability p of every prompt, and with it the true advantage A = r - p.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from policies.base import AnswerDistribution, PromptBatch, Rollout


@runtime_checkable
class Task(Protocol):
    name: str
    """Short name (run labels)."""
    texts: tuple[str, ...]
    """[N] the prompt of every problem of the source, by row."""

    def __len__(self) -> int:
        """Number of prompts in the source."""
        ...

    def sample_prompts(self, num: int) -> PromptBatch:
        """``num`` distinct prompts, drawn from the task's own seeded RNG."""
        ...

    def rewards(self, prompts: PromptBatch, rollout: Rollout) -> torch.Tensor:
        """[P, G] rewards of ``rollout.texts`` (the task reads text, never token ids). A task with
        reward functions (``rlvr_env.rewards``: env.rewards) also has ``reward_functions`` and
        ``reward_scores(prompts, rollout) -> RewardScores``, which the trainer trains on instead
        (NaN: unscorable); ``rewards`` then stays the verifier's verdict, what evaluation reads."""
        ...

    def bucket(self, prompts: PromptBatch) -> torch.Tensor:
        """[P] difficulty bucket of each prompt (0 hard, 1 medium, 2 easy)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class ExactTask(Task, Protocol):
    buckets: torch.Tensor
    """[N] bucket of every prompt of the source."""
    candidates: tuple[tuple[str, ...], ...]
    """[N][K] candidate answer texts (what a tabular policy chooses among)."""
    initial_logits: torch.Tensor
    """[N, K] a tabular policy's starting logits (each prompt's initial p)."""

    def success_probability(self, policy: AnswerDistribution, prompt_index: torch.Tensor | None = None) -> torch.Tensor:
        """[P] exact p of each prompt (all prompts when ``prompt_index`` is None)."""
        ...

    def policy_metrics(self, policy: AnswerDistribution) -> dict[str, torch.Tensor]:
        """Exact facts about the policy over the whole source (may be empty)."""
        ...


def exact_view(task: Task, policy) -> ExactTask | None:
    """The task as an ``ExactTask`` when exact success probabilities exist for this policy
    (an exact task and a policy exposing its answer distribution), else None."""
    if not isinstance(task, Task):
        raise TypeError(f"{type(task).__name__} does not implement the Task protocol (rlvr_env.protocol.Task)")
    if isinstance(task, ExactTask) and isinstance(policy, AnswerDistribution):
        return task
    return None
