"""Our advantage reweighters (HA-DW, F-GRPO focal, A-GRAE, ...) inside other trainers.

* ``algorithms.integrations.trl``: ``ReweightedGRPOTrainer``, TRL's ``GRPOTrainer`` with
  ``reweight={"name": "hadw", ...}`` (needs the ``trl`` extra).
* ``algorithms.integrations.verl``: verl advantage estimators ``grpo_hadw``, ``grpo_focal``,
  ``grpo_agrae`` and ``rlvr_reweighted`` (needs the ``verl`` extra); loaded by verl itself
  through the ``verl.plugins`` entry point, or by ``python -m algorithms.integrations.verl.main``.

Neither framework is imported here: the core package does not depend on them.
"""

from algorithms.integrations.common import STATE_FILE, FrameworkReweighter, reweight_config

__all__ = ["STATE_FILE", "FrameworkReweighter", "reweight_config"]
