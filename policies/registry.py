"""``POLICIES``: policy config name -> builder ``(task, reference) -> Policy``.

``reference`` is True when the algorithm's KL penalty is on, so that a backend keeps a
frozen reference (or, with LoRA, knows to switch the adapter off) only when it is needed.
Backends register here on import of ``policies``; heavy imports (transformers) happen only
when a builder runs.
"""

from algorithms.registry import Registry

POLICIES = Registry("policy", "(task, reference: bool) -> Policy")
