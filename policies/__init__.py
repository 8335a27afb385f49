"""Policies: the ``Policy`` protocol and its backends (tabular, transformers with its samplers).

``POLICIES`` (``policies.registry``) maps a policy config name to a builder
``(task, reference) -> Policy``; importing this package registers every backend (the
transformers one imports transformers only when it builds).
"""

from policies import hf  # noqa: F401  (registers "hf")
from policies.hf import tiny  # noqa: F401  (registers "tiny-qwen3")
from policies.base import Policy, PromptBatch, Rollout
from policies.registry import POLICIES
from policies.loglinear import LogLinearPolicy  # registers "loglinear"
from policies.tabular import TabularParams, TabularPolicy

__all__ = ["LogLinearPolicy", "POLICIES", "Policy", "PromptBatch", "Rollout", "TabularParams", "TabularPolicy"]
