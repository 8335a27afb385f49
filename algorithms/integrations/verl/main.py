"""verl's own ``main_ppo`` with our estimators registered: change one word of a verl command.

    python -m verl.trainer.main_ppo algorithm.adv_estimator=grpo ...
    python -m algorithms.integrations.verl.main algorithm.adv_estimator=grpo_hadw ...

Before handing every argument to verl's Hydra entry point, this registers the estimators here,
names this plugin in ``VERL_USE_EXTERNAL_MODULES`` (so that verl's Ray workers, the trainer's
driver among them, register them too, with or without the entry point installed) and sets
``trainer.checkpoint_callback_class`` to ``ReweighterCheckpoint`` unless the command sets it.
"""

from __future__ import annotations

import os
import sys
import warnings

PLUGIN = "algorithms.integrations.verl"
CALLBACK_KEY = "trainer.checkpoint_callback_class"


def with_checkpoint_callback(argv: list[str], callback: str) -> list[str]:
    """``trainer.checkpoint_callback_class=callback`` and ``argv``, unless ``argv`` sets that key already
    (first: Hydra reads the overrides before its flags such as ``--cfg job``)."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == CALLBACK_KEY:
            if value != callback:
                warnings.warn(f"{CALLBACK_KEY}={value}: the reweighter's state is saved with verl's checkpoints only "
                              f"by {callback} or a subclass of it", stacklevel=2)
            return list(argv)
    return [f"{CALLBACK_KEY}={callback}", *argv]


def main(argv: list[str] | None = None) -> None:
    """Run verl's ``main_ppo`` on ``argv`` (default: the command line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    modules = [m for m in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m]
    if PLUGIN not in modules:
        os.environ["VERL_USE_EXTERNAL_MODULES"] = ",".join([*modules, PLUGIN])
    from algorithms.integrations.verl import CALLBACK  # registers the estimators in this process

    from verl.trainer import main_ppo

    sys.argv = [sys.argv[0], *with_checkpoint_callback(argv, CALLBACK)]
    main_ppo.main()


if __name__ == "__main__":
    main()
