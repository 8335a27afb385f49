"""Policies: the ``Policy`` protocol and its backends (tabular; transformers and vLLM later).

``POLICIES`` maps a policy config name to a builder ``(task) -> Policy``.
"""

from policies.base import Policy, PromptBatch, Rollout
from policies.tabular import POLICIES, TabularParams, TabularPolicy

__all__ = ["POLICIES", "Policy", "PromptBatch", "Rollout", "TabularParams", "TabularPolicy"]
