"""Train one algorithm on one problem source: ``python -m experiments.run [KEY=VALUE ...]``.

Examples:
    python -m experiments.run                                   # grpo_hadw, tabular, bandit
    python -m experiments.run algo=grpo seed=1 train.steps=500
    python -m experiments.run algo=grpo reweight=hadw reweight.lambda_scale=1.3
    python -m experiments.run resume=runs/grpo_hadw-bandit-s0-20261121-120000
    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m experiments.run policy=tiny-qwen3 env=arithmetic
    accelerate launch --config_file configs/accelerate/fsdp_cpu_2proc.yaml -m experiments.run policy=tiny-qwen3 env=arithmetic
    python -m experiments.run --help        # config groups and every value
    python -m experiments.run --stages      # registered stages per registry
"""

from __future__ import annotations

import errno
import sys
import time
import traceback

import hydra
from omegaconf import DictConfig
from tqdm import tqdm

from algorithms import ConfigError, registries
from experiments.compare.arena import run_arena
from experiments.parallel.launch import (broadcast_object, close_processes, end_process, init_processes,
                                        launched_processes, processes)
from experiments.training import metrics as M
from experiments.training.build import check_override_keys
from experiments.training.checkpoint import list_checkpoints
from experiments.training.guards import RunStopped
from experiments.training.lifecycle import TrainingRun, resolve_config
from experiments.training.tracking import summary_table
from experiments.training.trainer import Trainer
from policies import POLICIES
from rlvr_env import TASKS

# (metric, label) shown on the progress bar when the run logs it.
PROGRESS_METRICS = [(M.EXACT_ACCURACY[0], "acc"), (M.REWARD, "reward"), (M.BELIEF, "belief"), (M.TOKENS_PER_S, "tok/s")]


def run(cfg: DictConfig, overrides: list[str] = ()) -> Trainer:
    """Build, train, summarise. Under several processes every process runs this; the main one
    alone writes (config, events, checkpoints, model) and prints."""
    plain, run_dir, resuming = resolve_config(cfg, list(overrides))
    run_dir = broadcast_object(run_dir)  # a new run's name carries the main process's clock
    with (TrainingRun.resume(plain, run_dir) if resuming else TrainingRun.start(plain, run_dir)) as training:
        trainer, run_dir = training.trainer, training.directory.path  # a default name made unique when created
        main = trainer.engine.is_main
        if resuming and main:
            print(f"resumed {run_dir} from {training.resumed_from.name} (step {trainer.step})", file=sys.stderr)
        if resuming and trainer.step >= trainer.params.steps:
            if not training.exported:  # stopped between its last checkpoint and the export
                trainer.export()
                if main:
                    print(f"the run had finished (step {trainer.step}) without its model: wrote {training.directory.model_dir}",
                          file=sys.stderr)
            elif main:
                print(f"nothing to train: the run is at step {trainer.step} and train.steps={trainer.params.steps}; "
                      f"pass a larger train.steps to continue it. Its summary:", file=sys.stderr)
            if main:
                print(summary_table(trainer.history, f"{trainer.algo.name} on {plain['env']['name']}: "
                                    f"{trainer.step} steps (from {training.resumed_from.name})"))
            return trainer
        bar = tqdm(total=trainer.params.steps, initial=trainer.step, desc=trainer.algo.name,
                   disable=not (trainer.params.progress and main), dynamic_ncols=True, file=sys.stderr)

        def on_step(step: int, values: dict[str, float]) -> None:
            bar.update(1)
            shown = {label: values[k] for k, label in PROGRESS_METRICS if k in values}
            bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)

        start = time.perf_counter()
        try:
            training.train(on_step)
        except KeyboardInterrupt as exc:
            bar.close()
            if main:
                print(f"\ninterrupted: {interrupt_note(exc, run_dir)}", file=sys.stderr)
            raise SystemExit(130) from None
        except RunStopped as exc:
            bar.close()
            raise RunStopped(f"{exc}; {kept_note(run_dir)}") from None
        finally:
            bar.close()
    if not main:
        return trainer
    elapsed = time.perf_counter() - start
    processes = f", {trainer.engine.world_size} processes" if trainer.engine.world_size > 1 else ""
    title = (f"{trainer.algo.name} on {plain['env']['name']}: {trainer.step} steps, seed {plain['seed']}, "
             f"{elapsed:.1f} s{processes}")
    print(summary_table(trainer.history, title))
    print(f"\nrun directory: {run_dir}   (tensorboard --logdir {run_dir.parent})")
    return trainer


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> dict[str, float] | None:
    """Returns the final metrics (a sweep's summary table collects them). A process of several
    ends here, without interpreter finalization (``end_process``: gloo's threads outlive it)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    overrides = hydra_cfg.overrides.task
    rank, code, result = 0, 0, None
    try:
        rank = init_processes()  # several processes under accelerate launch / torchrun
        if processes() > 1 and (cfg.get("arena") or hydra_cfg.mode == RunMode.MULTIRUN):
            raise ConfigError(f"{'arena' if cfg.get('arena') else 'sweeps (-m)'}: one process only; several processes "
                              "train one run (start without accelerate launch)")
        if cfg.get("arena"):
            run_arena(list(cfg.arena), overrides)
        else:
            trainer = run(cfg, overrides)
            result = trainer.history[-1] if trainer.history else None
    except (ConfigError, RunStopped, OSError) as exc:
        if isinstance(exc, OSError) and not file_error(exc):
            raise
        if processes() == 1 or rank == 0:  # every process finds the same problem: say it once
            print(f"error: {os_error(exc) if isinstance(exc, OSError) else exc}", file=sys.stderr)
        code = 1 if isinstance(exc, RunStopped) else 2
    except SystemExit as exc:  # Ctrl-C: 130
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        if launched_processes() == 1:
            raise
        traceback.print_exc()
        code = 1
    finally:
        close_processes()
    if launched_processes() > 1:
        end_process(code)
    if code:
        sys.exit(code)
    return result


def interrupt_note(exc: KeyboardInterrupt, run_dir) -> str:
    """What an interrupted run kept, and how to continue it."""
    saved = getattr(exc, "checkpoint", None)
    if saved is not None:
        return f"checkpoint {saved.name} written after step {exc.step}; continue with: python -m experiments.run resume={run_dir}"
    return f"stopped at once, nothing saved; {kept_note(run_dir)}"


def kept_note(run_dir) -> str:
    """The newest checkpoint a stopped run keeps (what ``resume=`` continues from)."""
    found = list_checkpoints(run_dir)
    if not found:
        return "no checkpoint was written before it (train.checkpoint_every)"
    return f"kept: {found[-1]} (resume={run_dir} continues from it)"


DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def file_error(exc: OSError) -> bool:
    """A read or write of a named file, or a full disk: the user's to fix, told in one line."""
    return exc.filename is not None or exc.errno in DISK_FULL


def os_error(exc: OSError) -> str:
    """A failed read or write in one line: the file and the system's reason (disk full, ...)."""
    where = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or str(exc)
    if exc.errno in DISK_FULL:
        reason = f"{reason} (disk full or over a size limit; nothing partial was left)"
    return f"{where}: {reason}"


def print_stages() -> None:
    for registry in registries().values():
        print(registry.describe(), end="\n\n")
    for registry in (POLICIES, TASKS):
        print(registry.describe(), end="\n\n")


def check_keys(argv: list[str]) -> None:
    """A mistyped key (``train.stepz=5``) in one line, ``error: train.stepz: unknown field; ...``
    and exit status 2, before Hydra runs (which would advise ``+train.stepz``). Plain runs
    only: flags (``-m``, ``--cfg``) and Hydra's own keys are left to Hydra."""
    if any(a.startswith("-") for a in argv):
        return
    try:
        check_override_keys([a for a in argv if not a.startswith(("hydra.", "hydra/"))])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    if "--stages" in sys.argv[1:]:
        print_stages()
        sys.exit(0)
    check_keys(sys.argv[1:])
    main()
