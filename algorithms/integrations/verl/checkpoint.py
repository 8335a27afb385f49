"""The reweighter state in verl's checkpoints, through verl's own hook ``trainer.checkpoint_callback_class``.

verl (v1 trainer, its default since 0.9) builds the callback in the driver when the trainer
starts and calls ``on_save`` after each checkpoint. ``ReweighterCheckpoint`` writes the driver's
reweighter states to ``global_step_N/rlvr_reweighter.pt`` there, and when the trainer starts it
reads them from the checkpoint verl is about to resume from (the same rules as verl's
``_load_checkpoint``: ``trainer.resume_mode`` auto / resume_path / disable).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from verl.trainer.ppo.checkpoint_callback import CheckpointCallback

from algorithms.integrations.common import STATE_FILE, load_states, save_states
from algorithms.integrations.verl.estimators import DRIVER

logger = logging.getLogger(__name__)


def resume_folder(config: Any) -> str | None:
    """The ``global_step_N`` folder verl resumes from under ``config.trainer`` (None: a fresh run)."""
    from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

    trainer = config.trainer
    mode = trainer.get("resume_mode", "auto")
    if mode == "disable":
        return None
    if mode == "auto":
        return find_latest_ckpt_path(os.path.abspath(trainer.default_local_dir))
    if mode == "resume_path":
        path = trainer.get("resume_from_path")
        if not isinstance(path, str) or "global_step_" not in path:
            raise ValueError(f"trainer.resume_from_path: must name a global_step_N folder, got {path!r}")
        return os.path.abspath(path)
    raise ValueError(f"trainer.resume_mode: must be one of auto, resume_path, disable; got {mode!r}")


class ReweighterCheckpoint(CheckpointCallback):
    """Saves and restores the reweighter states of ``grpo_hadw``, ``grpo_focal``, ``grpo_agrae``, ``rlvr_reweighted``.

    ``trainer.checkpoint_callback_class=algorithms.integrations.verl.checkpoint.ReweighterCheckpoint``
    (``python -m algorithms.integrations.verl.main`` sets it). A callback of your own can
    subclass this one and call ``super().on_save(...)``.
    """

    def __init__(self, config: Any = None):
        super().__init__(config=config)
        DRIVER.saving = True
        folder = resume_folder(config) if config is not None else None
        if folder is None:
            return
        states = load_states(folder)
        if states is None:
            logger.warning("no %s in %s: the reweighters start from their initial state", STATE_FILE, folder)
            return
        DRIVER.restore(states, source=os.path.join(folder, STATE_FILE))
        logger.info("restored the reweighter state of %s from %s", ", ".join(sorted(states)), folder)

    def on_save(self, trainer, global_step: int, checkpoint_dir: str, async_save: bool = False, **kwargs) -> None:
        """Write the driver's reweighter states beside verl's checkpoint of ``global_step``."""
        super().on_save(trainer, global_step, checkpoint_dir, async_save=async_save, **kwargs)
        save_states(DRIVER.state_dicts(), checkpoint_dir)
