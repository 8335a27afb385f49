"""Config composition and building, shared by every entry point (run, arena, study, ...).

    compose_config(*overrides) -> dict        the config Hydra composes for these overrides
    build_trainer(cfg, run_dir) -> Trainer    validate a plain config and build every component
    resolve_config(cfg, overrides)            the run's config, directory and whether it resumes
    override_key("+train.steps=5") -> "train.steps"

Nothing here imports another entry point, so any of them can import this module.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from algorithms import ConfigError, build_algorithm
from algorithms.algorithm import algorithm_label
from algorithms.registry import build_params
from experiments.checkpoint import list_checkpoints
from experiments.distributed import build_engine, check_data_parallel, processes
from experiments.evaluator import EvalParams, PeriodicEval
from experiments.optim import OptimParams, build_optimizer, build_scheduler
from experiments.trainer import Trainer, TrainParams
from policies import POLICIES
from policies.base import AnswerDistribution
from rlvr_env import TASKS
from rlvr_env.protocol import exact_view
from rlvr_env.tasks import MathTask

CONF_DIR = Path(__file__).resolve().parent / "conf"
CONFIG_FILE = "config.yaml"
# What may change when a run is resumed (everything else is the run's own config).
RESUMABLE_OVERRIDES = ("resume", "train.steps", "train.progress", "train.checkpoint_every", "train.keep_checkpoints")


def override_key(override: str) -> str:
    """The config key of a command-line override: ``+a.b=1``, ``++a.b=1``, ``~a.b`` -> ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


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
    algorithm = build_algorithm(cfg["algo"], cfg.get("reweight"))
    # The policy keeps a frozen reference (or knows to switch its adapter off) only with a KL penalty.
    policy = POLICIES.build(cfg["policy"], "policy")(task, algorithm.kl_beta > 0)
    exact = exact_view(task, policy)
    check_data_parallel(processes(), policy, cfg["policy"].get("name"), exact, train.prompts_per_step)
    evaluator = build_evaluator(cfg, train.eval_every, task, policy) if train.eval_every else None
    optimizer_steps = train.steps * train.ppo_epochs * train.minibatches
    engine = build_engine(policy, lambda parameters: build_optimizer(optim, parameters),  # several processes: DDP / FSDP
                          lambda optimizer: build_scheduler(optim, optimizer, optimizer_steps))
    return Trainer(train, task, policy, engine, algorithm, optim.max_grad_norm, seed, run_dir, logger,
                   exact=exact, evaluator=evaluator)


def build_evaluator(cfg: dict[str, Any], every: int, task, policy) -> PeriodicEval:
    """The evaluation of ``train.eval_every``: the env's held-out problems (the tabular policy:
    its own prompts, with the exact pass@k beside the estimate), ``eval.*`` settings."""
    params = build_params(EvalParams, {**cfg.get("eval", {}), "bootstrap": 0}, "eval")
    if isinstance(policy, AnswerDistribution):
        return PeriodicEval(every, task, params, exact_view(task, policy))
    heldout = getattr(task, "heldout", None) or []
    if not heldout:
        raise ConfigError(f"train.eval_every: env {cfg['env']['name']!r} keeps no held-out problems (set env.heldout)")
    target = MathTask(heldout, [], seed=0, template=cfg["env"].get("template", "boxed"), name="heldout")
    return PeriodicEval(every, target, params, None)


def resolve_config(cfg: DictConfig, overrides: list[str]) -> tuple[dict[str, Any], Path, bool]:
    """The run's config, its directory and whether it resumes an earlier run."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    if not plain.get("resume"):
        return plain, new_run_dir(plain), False
    run_dir = Path(plain["resume"])
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        raise ConfigError(f"resume: {saved} not found (resume takes a run directory)")
    changed = [o for o in overrides if override_key(o) not in RESUMABLE_OVERRIDES]
    if changed:
        raise ConfigError(
            f"resume: cannot change {', '.join(changed)} when resuming; the run's config is {saved} "
            f"(allowed: {', '.join(RESUMABLE_OVERRIDES[1:])})"
        )
    resumed = OmegaConf.load(saved)
    explicit = {override_key(o) for o in overrides}
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
