"""Random draws of the batched simulator: which prompts, which answers, which minibatch order.

Two sources, one interface (shapes: R runs, N prompts in the bank, P per step, K answers,
G per prompt, B = P * G responses):

* ``RunDraws`` (default, fast): each run has its own ``torch.Generator`` seeded with its
  seed; prompts are ``randperm(N)[:P]`` (all N in bank order when P = N), answers are
  drawn by inverse CDF from uniforms, vectorised over runs. A run's draws depend only on
  its own seed, never on which other runs share the batch, so runs with the same seed
  and different hyperparameters see the same random numbers (paired comparisons).
* ``TrainerDraws``: the single-run Trainer's own streams (its task's numpy prompt
  sampler, ``torch.multinomial`` and ``torch.randperm`` on its generator), one call per
  run. A batched run with these draws reproduces R single runs number for number
  (tests/test_batched.py); it is slower, for checking.
"""

from __future__ import annotations

import torch


class RunDraws:
    """Per-run generators, vectorised sampling (see module doc)."""

    def __init__(self, seeds: list[int], num_prompts: int, prompts_per_step: int, shuffle: bool):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.num_prompts = num_prompts
        self.prompts_per_step = prompts_per_step
        self.shuffle = shuffle

    def prompts(self) -> torch.Tensor | None:
        """[R, P] distinct prompt indices per run, or None: every prompt, in bank order (P = N)."""
        if self.prompts_per_step == self.num_prompts:
            return None
        return torch.stack([torch.randperm(self.num_prompts, generator=g)[: self.prompts_per_step] for g in self.generators])

    def answers(self, probs: torch.Tensor, group_size: int) -> torch.Tensor:
        """[R, P, G] answers drawn from ``probs`` [R, P, K] by inverse CDF."""
        _, prompts, k = probs.shape
        u = torch.stack([torch.rand(prompts, group_size, generator=g) for g in self.generators])  # (R, P, G)
        cdf = probs.cumsum(-1)  # (R, P, K)
        # First answer whose CDF exceeds u * total: zero-probability answers are never drawn.
        return torch.searchsorted(cdf, u * cdf[..., -1:], right=True).clamp_max_(k - 1)

    def order(self, batch: int) -> torch.Tensor | None:
        """[R, B] response order for minibatches, or None: in order (one minibatch: order is irrelevant)."""
        if not self.shuffle:
            return None
        return torch.stack([torch.randperm(batch, generator=g) for g in self.generators])


class TrainerDraws:
    """The draws of R single-run Trainers, from their own task and generator (see module doc)."""

    def __init__(self, trainers: list, prompts_per_step: int):
        self.trainers = trainers
        self.prompts_per_step = prompts_per_step

    def prompts(self) -> torch.Tensor:
        return torch.stack([t.task.sample_prompts(self.prompts_per_step).index for t in self.trainers])

    def answers(self, probs: torch.Tensor, group_size: int) -> torch.Tensor:
        # The tabular policy's sample(): multinomial on exp(log_softmax(rows)), per run.
        return torch.stack([torch.multinomial(probs[r], group_size, replacement=True, generator=t.generator)
                            for r, t in enumerate(self.trainers)])

    def order(self, batch: int) -> torch.Tensor:
        # Trainer.update permutes the responses every epoch, even with one minibatch.
        return torch.stack([torch.randperm(batch, generator=t.generator) for t in self.trainers])


DRAWS = ("runs", "trainer")
