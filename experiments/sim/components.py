"""The single-run builders the simulator reuses, imported from one place.

``compose_config`` / ``build_trainer`` live in ``experiments.run`` today and move to
``experiments.config``; this module follows them.
"""

from __future__ import annotations

try:
    from experiments.config import build_trainer, compose_config
except ImportError:  # before the config module exists
    from experiments.run import build_trainer, compose_config

__all__ = ["build_trainer", "compose_config"]
