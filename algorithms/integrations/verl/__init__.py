"""verl plugin: our reweighters as verl advantage estimators (verl >= 0.9, the ``verl`` extra).

Importing this package registers, in verl's registry (``register_adv_est``):

    grpo_hadw        GRPO advantage x HA-DW       (arXiv:2601.08521; the paper's belief, not a window mean)
    grpo_focal       GRPO advantage x F-GRPO      (arXiv:2602.06717)
    grpo_agrae       GRPO advantage x A-GRAE      (arXiv:2602.05548)
    rlvr_reweighted  any of our advantage stages x any reweighter, from ``algorithm.rlvr``

(verl's ``grpo`` and ``gae`` are special-cased before its registry lookup, hence new names.)
verl imports it by itself: through the ``verl.plugins`` entry point this package declares (on
``import verl``, verl >= 0.9), or ``VERL_USE_EXTERNAL_MODULES=algorithms.integrations.verl``.
Select one with ``algorithm.adv_estimator=grpo_hadw``; hyperparameters under ``algorithm.rlvr``
(see ``estimators``); the state is saved with verl's checkpoints by ``ReweighterCheckpoint``.
"""

from __future__ import annotations

from typing import Any

import torch
from verl.trainer.ppo.core_algos import register_adv_est

from algorithms.integrations.verl.checkpoint import ReweighterCheckpoint
from algorithms.integrations.verl.estimators import CALLBACK, DRIVER, ESTIMATORS, outcome_advantage


def _estimator(name: str):
    def estimate(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: Any = None,
                 config: Any = None, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return outcome_advantage(name, token_level_rewards, response_mask, index, config)

    estimate.__name__ = estimate.__qualname__ = f"compute_{name}_advantage"
    estimate.__doc__ = (f"verl advantage estimator {name!r}: token_level_rewards [B, T], response_mask [B, T], "
                        "index (uid) [B] -> (advantages, returns) [B, T]; see algorithms.integrations.verl.")
    return estimate


for _name in ESTIMATORS:
    register_adv_est(_name)(_estimator(_name))

__all__ = ["CALLBACK", "DRIVER", "ESTIMATORS", "ReweighterCheckpoint", "outcome_advantage"]
