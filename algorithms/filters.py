"""Group filters: which sampled groups enter the update. rewards [P, G] -> keep [P] bool.

A filter may ask the trainer to sample more groups (``max_extra_rounds``) until the
batch has P groups that pass, as DAPO's dynamic sampling does.
"""

from __future__ import annotations

import attrs
import torch

from algorithms.registry import NoParams, Registry, integer

FILTERS = Registry("filter", "rewards [P, G] -> keep [P] bool")


class KeepAll:
    """No filtering: every group enters the update; one sampling round."""

    max_extra_rounds = 0
    keeps_every_group = True
    """The update's batch is the sampled one (what the trainer's on-policy shortcut needs)."""

    def __init__(self, params=NoParams()):
        self.params = params

    def keep(self, rewards: torch.Tensor) -> torch.Tensor:
        return torch.ones(rewards.shape[0], dtype=torch.bool, device=rewards.device)


FILTERS.register("none")(KeepAll)


@attrs.frozen
class DynamicSamplingParams:
    max_extra_rounds: int = attrs.field(default=3, validator=integer(0))
    """Extra sampling rounds allowed per step to fill the batch (then train on what passed)."""


@FILTERS.register("dynamic_sampling", DynamicSamplingParams)
class DynamicSampling(KeepAll):
    """DAPO (Yu et al. 2025, arXiv:2503.14476): drop groups whose rewards all agree.

    A zero-variance group has zero advantage and contributes no gradient; the trainer
    samples further prompts (up to ``max_extra_rounds`` more rounds) to fill the batch.
    """

    keeps_every_group = False

    def __init__(self, params: DynamicSamplingParams):
        super().__init__(params)
        self.max_extra_rounds = params.max_extra_rounds

    def keep(self, rewards: torch.Tensor) -> torch.Tensor:
        return rewards.amax(dim=1) != rewards.amin(dim=1)
