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
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from algorithms import ConfigError, build_algorithm, registries
from algorithms.algorithm import algorithm_label
from algorithms.registry import build_params
from experiments.checkpoint import list_checkpoints, load_latest
from experiments.optim import OptimParams, build_optimizer
from experiments.tracking import TensorBoardLogger, summary_table
from experiments.trainer import Trainer, TrainParams
from policies import POLICIES
from rlvr_env import TASKS

CONF_DIR = Path(__file__).resolve().parent / "conf"
CONFIG_FILE = "config.yaml"
# What may change when a run is resumed (everything else is the run's own config).
RESUMABLE_OVERRIDES = ("resume", "train.steps", "train.progress", "train.checkpoint_every", "train.keep_checkpoints")


def compose_config(*overrides: str) -> dict[str, Any]:
    """The run config Hydra composes for these command-line overrides, as a plain dict
    (for scripts, notebooks and tests; inside a running Hydra app use ``hydra.compose``)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return OmegaConf.to_container(compose(config_name="config", overrides=list(overrides)), resolve=True)


def build_trainer(cfg: dict[str, Any], run_dir: Path, logger=None) -> Trainer:
    """Validate a plain config dict and build every component of a run."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: must be an integer, got {seed!r}")
    train = build_params(TrainParams, cfg["train"], "train")
    optim = build_params(OptimParams, cfg["optim"], "optim")
    entry, env_params = TASKS.make_params(cfg["env"], "env")
    task = entry.target(env_params, seed=seed)
    if train.prompts_per_step > len(task):
        raise ConfigError(f"train.prompts_per_step: {train.prompts_per_step} exceeds the {len(task)} prompts of env {entry.name!r}")
    policy = POLICIES.build(cfg["policy"], "policy")(task)
    algorithm = build_algorithm(cfg["algo"], cfg.get("reweight"))
    optimizer = build_optimizer(optim, policy.parameters())
    return Trainer(train, task, policy, optimizer, algorithm, optim.max_grad_norm, seed, run_dir, logger)


def resolve_config(cfg: DictConfig, overrides: list[str]) -> tuple[dict[str, Any], Path, bool]:
    """The run's config, its directory and whether it resumes an earlier run."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    if not plain.get("resume"):
        return plain, new_run_dir(plain), False
    run_dir = Path(plain["resume"])
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        raise ConfigError(f"resume: {saved} not found (resume takes a run directory)")
    changed = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in RESUMABLE_OVERRIDES]
    if changed:
        raise ConfigError(
            f"resume: cannot change {', '.join(changed)} when resuming; the run's config is {saved} "
            f"(allowed: {', '.join(RESUMABLE_OVERRIDES[1:])})"
        )
    resumed = OmegaConf.load(saved)
    explicit = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    for key in explicit - {"resume"}:
        OmegaConf.update(resumed, key, OmegaConf.select(cfg, key), merge=False)
    resumed.resume = str(run_dir)
    return OmegaConf.to_container(resumed, resolve=True), run_dir, True


def new_run_dir(cfg: dict[str, Any]) -> Path:
    root = Path(cfg["train"]["log_dir"])
    name = cfg["train"]["run_name"]
    if name is not None:
        run_dir = root / name
        if list_checkpoints(run_dir):
            raise ConfigError(f"train.run_name: {run_dir} already holds a run; resume={run_dir} continues it")
        return run_dir
    base = f"{algorithm_label(cfg['algo'], cfg.get('reweight'))}-{cfg['env']['name']}-s{cfg['seed']}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir, n = root / base, 1
    while run_dir.exists():
        run_dir, n = root / f"{base}-{n}", n + 1
    return run_dir


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
            from experiments.arena import run_arena

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
