"""Train one algorithm on one problem source: ``python -m experiments.run [KEY=VALUE ...]``.

Examples:
    python -m experiments.run                                   # grpo_hadw, tabular, bandit
    python -m experiments.run algo=grpo seed=1 train.steps=500
    python -m experiments.run algo=grpo reweight=hadw reweight.lambda_scale=1.3
    python -m experiments.run resume=runs/grpo_hadw-bandit-s0-20261121-120000
    python -m experiments.run --help        # config groups and every value
    python -m experiments.run --stages      # registered stages per registry
"""

from __future__ import annotations

import sys
import time

import hydra
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from algorithms import ConfigError, registries
from experiments.arena import run_arena
from experiments.checkpoint import load_latest
from experiments.config import CONFIG_FILE, build_trainer, resolve_config
from experiments.tracking import TensorBoardLogger, summary_table
from experiments.trainer import Trainer
from policies import POLICIES
from rlvr_env import TASKS

# (metric, label) shown on the progress bar when the run logs it.
PROGRESS_METRICS = [("accuracy/all", "acc"), ("reward/mean", "reward"), ("hadw/belief", "belief"),
                    ("speed/tokens_per_s", "tok/s")]


def run(cfg: DictConfig, overrides: list[str] = ()) -> Trainer:
    plain, run_dir, resuming = resolve_config(cfg, list(overrides))
    trainer = build_trainer(plain, run_dir)  # validates everything before touching the disk
    if resuming:
        found = load_latest(run_dir)
        if found is None:
            raise ConfigError(f"resume: no readable checkpoint in {run_dir}/checkpoints")
        path, state = found
        trainer.load_state_dict(state)
        print(f"resumed {run_dir} from {path.name} (step {trainer.step})", file=sys.stderr)
        if trainer.step >= trainer.params.steps:
            print(f"nothing to train: the run is at step {trainer.step} and train.steps={trainer.params.steps}; "
                  f"pass a larger train.steps to continue it. Its summary:", file=sys.stderr)
            print(summary_table(trainer.history, f"{trainer.algo.name} on {plain['env']['name']}: {trainer.step} steps "
                                f"(from {path.name})"))
            return trainer
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resuming:
        OmegaConf.save(OmegaConf.create(plain), run_dir / CONFIG_FILE)
    trainer.logger = TensorBoardLogger.resume(run_dir, trainer.history) if resuming else TensorBoardLogger(run_dir)

    bar = tqdm(total=trainer.params.steps, initial=trainer.step, desc=trainer.algo.name,
               disable=not trainer.params.progress, dynamic_ncols=True, file=sys.stderr)

    def on_step(step: int, values: dict[str, float]) -> None:
        bar.update(1)
        shown = {label: values[k] for k, label in PROGRESS_METRICS if k in values}
        bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)

    start = time.perf_counter()
    try:
        trainer.train(on_step)
    except KeyboardInterrupt:
        bar.close()
        saved = f"checkpoint saved at step {trainer.step}" if trainer.step else "stopped before the first step"
        print(f"\ninterrupted: {saved}; continue with: python -m experiments.run resume={run_dir}", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        bar.close()
        trainer.logger.close()
    elapsed = time.perf_counter() - start
    title = (f"{trainer.algo.name} on {plain['env']['name']}: {trainer.step} steps, seed {plain['seed']}, "
             f"{elapsed:.1f} s")
    print(summary_table(trainer.history, title))
    print(f"\nrun directory: {run_dir}   (tensorboard --logdir {run_dir.parent})")
    return trainer


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> dict[str, float] | None:
    """Returns the final metrics (a sweep's summary table collects them)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = HydraConfig.get().overrides.task
    try:
        if cfg.get("arena"):
            run_arena(list(cfg.arena), overrides)
            return None
        trainer = run(cfg, overrides)
        return trainer.history[-1] if trainer.history else None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def print_stages() -> None:
    for registry in registries().values():
        print(registry.describe(), end="\n\n")
    for registry in (POLICIES, TASKS):
        print(registry.describe(), end="\n\n")


if __name__ == "__main__":
    if "--stages" in sys.argv[1:]:
        print_stages()
        sys.exit(0)
    main()
