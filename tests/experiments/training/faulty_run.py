"""``python -m experiments.run`` with one fault injected, for the tests that run it as a user
does (a subprocess) and check what the program did and kept:

    FAULT=sigint:sample:3 python tests/experiments/training/faulty_run.py KEY=VALUE ...

(several processes: FAULT_RANK=R fires on process R only.)
KIND:WHERE:STEP - at step STEP (the step in progress, from 1), when WHERE begins:
    KIND   sigint (the process sends itself SIGINT), ctrl-c (SIGINT to the whole process group,
           as a terminal's Ctrl-C: a launcher and every process), kill (SIGKILL), nan (see
           WHERE; STEP+ : that step and every later one)
    WHERE  sample (policy.sample), score (task.rewards), update (engine.step), loss (nan: the
           objective of that step's micro-batches times NaN), weights (nan: one weight set to
           NaN after the optimizer step), export (before the final export), save_model
           (mid-export: the model written into the temporary folder, one file removed, then
           SIGKILL); export and save_model whenever they come
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import torch  # noqa: E402

from experiments.training import trainer as T  # noqa: E402

KIND, WHERE, STEP = os.environ["FAULT"].split(":")
FROM_ON = STEP.endswith("+")
STEP = int(STEP.rstrip("+"))
CURRENT: list[T.Trainer] = []
IN_STEP = [False]  # inside train_step (not the evaluation between steps, which samples too)
FIRED = [False]


def due() -> bool:
    step = CURRENT[0].step + 1
    return IN_STEP[0] and (step >= STEP if FROM_ON else step == STEP)


def fire() -> None:
    """The signal, once per process (a second SIGINT would mean "stop now")."""
    if FIRED[0]:
        return
    FIRED[0] = True
    if os.environ.get("FAULT_RANK", os.environ.get("RANK", "0")) != os.environ.get("RANK", "0"):
        return
    if KIND == "ctrl-c":  # as the terminal does: the whole process group (a launcher and its processes)
        os.killpg(os.getpgrp(), signal.SIGINT)
    else:
        os.kill(os.getpid(), signal.SIGKILL if KIND == "kill" else signal.SIGINT)


def wrap(cls: type, name: str, where: str) -> None:
    inner = getattr(cls, name)

    def wrapped(self, *args, **kwargs):
        if WHERE == where and KIND in ("sigint", "ctrl-c", "kill") and (where == "export" or due()):
            fire()
        result = inner(self, *args, **kwargs)
        if WHERE == where == "loss" and KIND == "nan" and due():
            loss, stats = result
            result = loss * float("nan"), stats
        if WHERE == "weights" and where == "update" and KIND == "nan" and due():
            with torch.no_grad():
                self.params[0].view(-1)[0] = float("nan")
        return result

    setattr(cls, name, wrapped)


original_step = T.Trainer.train_step


def train_step(self):
    if not CURRENT:
        CURRENT.append(self)
        wrap(type(self.policy), "sample", "sample")
        wrap(type(self.task), "rewards", "score")
        wrap(type(self.engine), "step", "update")
        wrap(type(self.algo), "objective", "loss")
        wrap(T.Trainer, "export", "export")
        save_model = type(self.policy).save_model

        def partial_save(policy, path, *args, **kwargs):
            save_model(policy, path, *args, **kwargs)
            if WHERE == "save_model":
                files = sorted(p for p in Path(path).rglob("*") if p.is_file())
                files[-1].unlink()
                os.kill(os.getpid(), signal.SIGKILL)

        type(self.policy).save_model = partial_save
    IN_STEP[0] = True
    try:
        return original_step(self)
    finally:
        IN_STEP[0] = False


T.Trainer.train_step = train_step

if __name__ == "__main__":
    import runpy

    runpy.run_module("experiments.run", run_name="__main__", alter_sys=True)  # as python -m experiments.run
