"""Config composition and building, shared by every entry point (run, arena, study, ...).

    compose_config(*overrides) -> dict        the config Hydra composes for these overrides
    build_trainer(cfg, run_dir) -> Trainer    validate a plain config and build every component
    override_key("+train.steps=5") -> "train.steps"

Nothing here writes to the disk; ``experiments.training.lifecycle`` creates run directories.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from algorithms import ConfigError, build_algorithm
from algorithms.registry import build_params, unknown_field
from experiments.parallel.launch import build_engine, check_data_parallel, processes
from experiments.evaluation.benchmarks import register_env_presets
from experiments.evaluation.evaluator import EvalParams, PeriodicEval
from algorithms.optim import OptimParams, build_optimizer, build_scheduler
from experiments.training.params import TrainParams
from experiments.training.trainer import Trainer
from policies import POLICIES
from policies.base import AnswerDistribution
from rlvr_env import TASKS
from rlvr_env.protocol import exact_view
from rlvr_env.tasks import MathTask

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
register_env_presets()  # env=math500, ...: before any config is composed


def override_key(override: str) -> str:
    """The config key of a command-line override: ``+a.b=1``, ``++a.b=1``, ``~a.b`` -> ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def compose_config(*overrides: str) -> dict[str, Any]:
    """The run config Hydra composes for these command-line overrides, as a plain dict
    (for scripts, notebooks and tests; inside a running Hydra app use ``hydra.compose``)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return OmegaConf.to_container(compose(config_name="config", overrides=list(overrides)), resolve=True)


def check_override_keys(overrides: list[str]) -> None:
    """A ConfigError (``unknown field; valid fields: ...; did you mean steps?``) for an override
    of a key the composed config does not have (``train.stepz=5``), where Hydra would advise
    ``+train.stepz``. Anything else Hydra refuses is left to Hydra's own message."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException
    from omegaconf import DictConfig
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    def composed(given):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose(config_name="config", overrides=list(given))

    try:
        composed(overrides)
        return
    except ConfigCompositionException as exc:
        cause = exc.__cause__
        if not isinstance(cause, (ConfigAttributeError, ConfigKeyError)) or not getattr(cause, "full_key", None):
            return
        key = str(cause.full_key)
    except Exception:  # noqa: BLE001 - Hydra says it when the run composes
        return
    parent, _, name = key.rpartition(".")
    try:
        node = composed([o for o in overrides if override_key(o) != key])
        node = OmegaConf.select(node, parent) if parent else node
    except Exception:  # noqa: BLE001
        return
    if isinstance(node, DictConfig):
        raise ConfigError(unknown_field(parent, name, [str(k) for k in node.keys()]))


def build_trainer(cfg: dict[str, Any], run_dir: Path, logger=None,
                  prompt_source: Callable[[int], Any] | None = None) -> Trainer:
    """Validate a plain config dict and build every component of a run (``logger`` and
    ``prompt_source``: see ``Trainer``)."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: must be an integer, got {seed!r}")
    train = build_params(TrainParams, cfg["train"], "train")
    optim = build_params(OptimParams, cfg["optim"], "optim")
    entry, env_params = TASKS.make_params(cfg["env"], "env")
    task = entry.target(env_params, seed=seed)
    check_prompts_per_step(train, task, entry.name)
    algorithm = build_algorithm(cfg["algo"], cfg.get("reweight"), train.group_size)
    # The policy keeps a frozen reference (or knows to switch its adapter off) only with a KL penalty.
    policy = POLICIES.build(cfg["policy"], "policy")(task, algorithm.kl_beta > 0)
    if hasattr(task, "fit_context"):  # prompts over the model's context: refused (or dropped), nothing written yet
        task = task.fit_context(policy)
        check_prompts_per_step(train, task, entry.name)
    if algorithm.tis_cap is not None and not getattr(policy, "separate_sampler", False):
        raise ConfigError(f"algo.tis.cap: truncated importance sampling corrects the samples of a separate "
                          f"generation engine (policy.sampler=vllm); policy {cfg['policy'].get('name')!r} samples "
                          "with its own weights (set algo.tis.cap=null)")
    exact = exact_view(task, policy)
    check_data_parallel(processes(), policy, cfg["policy"].get("name"), exact, train.prompts_per_step)
    evaluator = build_evaluator(cfg, train.eval_every, task, policy) if train.eval_every else None
    optimizer_steps = train.steps * train.ppo_epochs * train.minibatches
    engine = build_engine(policy, lambda parameters: build_optimizer(optim, parameters),  # several processes: DDP / FSDP
                          lambda optimizer: build_scheduler(optim, optimizer, optimizer_steps))
    return Trainer(train, task, policy, engine, algorithm, optim.max_grad_norm, seed, run_dir, logger,
                   exact=exact, evaluator=evaluator, prompt_source=prompt_source)


def check_prompts_per_step(train: TrainParams, task, env: str) -> None:
    if train.prompts_per_step > len(task):
        raise ConfigError(f"train.prompts_per_step: {train.prompts_per_step} exceeds the {len(task)} prompts of env {env!r}")


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
