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
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resuming:
        OmegaConf.save(OmegaConf.create(plain), run_dir / CONFIG_FILE)
    trainer.logger = TensorBoardLogger(run_dir, purge_step=trainer.step + 1 if resuming else None)

    steps = trainer.params.steps
    bar = tqdm(total=steps, initial=trainer.step, desc=trainer.algo.name, disable=not trainer.params.progress,
               dynamic_ncols=True, file=sys.stderr)

    def on_step(step: int, values: dict[str, float]) -> None:
        bar.update(1)
        shown = {k.split("/")[-1] if k != "accuracy/all" else "acc": values[k]
                 for k in ("accuracy/all", "reward/mean", "hadw/belief") if k in values}
        bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)

    start = time.perf_counter()
    try:
        trainer.train(on_step)
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
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    overrides = HydraConfig.get().overrides.task
    try:
        if cfg.get("arena"):
            run_arena(list(cfg.arena), overrides)
        else:
            run(cfg, overrides)
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
