"""What stops a run cleanly: non-finite numbers and Ctrl-C.

    check_rewards(rewards, step)          NaN / inf rewards -> NonFiniteRewardError
    check_update(values, bad_weights, step)  the step's loss, gradient norm, weights -> NonFiniteError
    with InterruptGuard(engine) as guard:    SIGINT / SIGTERM: finish the step, then guard.requested()

A run stops on either error with one line (``experiments.run`` prints ``error: ...``) and
keeps its last good checkpoint: nothing is saved or exported after a non-finite step.

Ctrl-C is deferred to the end of the step in progress, so the checkpoint written on
interrupt is the state after a whole step, exactly what a periodic checkpoint holds; a
resumed run is then bit-identical to an uninterrupted one. A second Ctrl-C stops at once,
without saving (the last checkpoint stands).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from pathlib import Path

import torch

from experiments.training import metrics as M


class RunStopped(RuntimeError):
    """A run refused to go on (one line; the last good checkpoint is kept)."""


class NonFiniteError(RunStopped):
    """A step's loss, gradient or weights were NaN or infinite."""


class NonFiniteRewardError(RunStopped, ValueError):
    """A reward was NaN or infinite: the step is refused rather than trained on garbage."""


class RewardFunctionStopped(RunStopped):
    """A reward function raised or returned something else than one finite number or None per completion."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) ended the run; ``checkpoint``: what was saved (None: nothing)."""

    def __init__(self, checkpoint: Path | None, step: int):
        super().__init__()
        self.checkpoint, self.step = checkpoint, step


def check_rewards(rewards: torch.Tensor, step: int, unscorable: bool = False) -> None:
    """Refuse NaN / inf rewards with the offending positions (rewards live on the host).
    ``unscorable``: NaN marks an unscorable response (a task's reward functions all returned
    None, ``rlvr_env.rewards``), only inf is refused."""
    bad = torch.isinf(rewards) if unscorable else ~torch.isfinite(rewards)
    if bad.any():
        where = bad.nonzero()[:5].tolist()
        raise NonFiniteRewardError(
            f"step {step}: {int(bad.sum())} non-finite reward(s) at [prompt, response] {where}; "
            "fix the reward function (return a finite value, or 0 for unscorable answers)"
        )


def check_update(values: dict[str, float], bad_weights: int, num_weights: int, step: int,
                 skip: bool) -> None:
    """Stop the run at ``step`` when its loss or gradient norm (``loss/value``,
    ``loss/grad_norm``) is non-finite (``skip``: those updates were dropped instead, see
    ``Trainer``) or any weight is (in either mode: an applied update cannot be taken back)."""
    if bad_weights:
        raise NonFiniteError(f"step {step}: non-finite weights ({bad_weights:,} of {num_weights:,} values) after "
                             "the update; lower optim.lr or set optim.max_grad_norm")
    if skip:
        return
    for key, what in ((M.LOSS, "loss"), (M.GRAD_NORM, "gradient norm")):
        value = values.get(key)
        if value is not None and not math.isfinite(value):
            raise NonFiniteError(f"step {step}: non-finite {what} ({value}); the update was not applied "
                                 "(train.on_nonfinite=skip drops such updates and goes on)")


class InterruptGuard:
    """SIGINT and SIGTERM set a flag instead of raising; ``requested()`` (every process calls
    it once per step) is True on every process when any process got one. The same signal a
    second time raises KeyboardInterrupt at once; a SIGTERM after a SIGINT does not (Ctrl-C
    under ``torchrun`` / ``accelerate launch`` reaches each process from the terminal and
    again as the launcher's SIGTERM, which it follows with SIGKILL after 30 s). Outside a main thread (signals cannot be caught
    there) it installs nothing and never requests."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, engine=None, announce: bool = True):
        self.engine, self.announce = engine, announce
        self.flag = False
        self.seen: set[int] = set()
        self.previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if signum in self.seen:
            raise KeyboardInterrupt
        self.seen.add(signum)
        if self.flag:  # SIGTERM after SIGINT: a launcher passing Ctrl-C on (torchrun, accelerate)
            return
        self.flag = True
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: finishing the step in progress, then a checkpoint "
                  "(again: stop now without saving)", file=sys.stderr, flush=True)

    def requested(self) -> bool:
        engine = self.engine
        if engine is not None and engine.world_size > 1:
            return engine.any_process(self.flag)
        return self.flag

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()
