"""The benchmarks (``rlvr_env.datasets.BENCHMARKS``) as env presets and as evaluation targets.

    register_env_presets()                   env=math500, env=gsm8k, ... (Hydra's ConfigStore)
    benchmark_task(name, trainer, cfg)       python -m experiments.evaluate benchmark=NAME
"""

from __future__ import annotations

from typing import Any

from algorithms import ConfigError
from policies.base import AnswerDistribution
from rlvr_env.datasets import BENCHMARKS
from rlvr_env.problems import load_jsonl
from rlvr_env.protocol import exact_view
from rlvr_env.tasks import MathTask, resolve_data_file


def register_env_presets() -> None:
    """One ``env`` preset per benchmark: env/jsonl.yaml with the benchmark's file and held-out split."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for b in BENCHMARKS.values():
        store.store(group="env", name=b.name, node={"defaults": ["jsonl", "_self_"], "path": b.path,
                                                    "heldout": b.heldout, "heldout_path": b.heldout_path})


def benchmark_task(name: str, trainer, cfg: dict[str, Any]):
    """The task to evaluate on, and its exact view where exact success probabilities exist:
    ``train`` (the env's own prompts), ``heldout`` (its held-out split), a benchmark of
    ``BENCHMARKS``, or a .jsonl path."""
    policy, task = trainer.policy, trainer.task
    if name == "train":
        return task, exact_view(task, policy)
    if isinstance(policy, AnswerDistribution):
        raise ConfigError(f"benchmark={name}: the tabular policy has a row per training prompt only; "
                          "evaluate it with benchmark=train")
    if name == "heldout":
        heldout = getattr(task, "heldout", None) or []
        if not heldout:
            raise ConfigError(f"benchmark=heldout: env {cfg['env']['name']!r} keeps no held-out problems "
                              "(set env.heldout, or name a benchmark)")
        return MathTask(heldout, [], seed=0, template=cfg["env"].get("template", "boxed"), name="heldout"), None
    data_dir = cfg["env"].get("data_dir")
    if name in BENCHMARKS:
        path = resolve_data_file(BENCHMARKS[name].eval_path, data_dir, "benchmark")
    elif name.endswith(".jsonl"):
        path = resolve_data_file(name, data_dir, "benchmark")
    else:
        raise ConfigError(f"benchmark: unknown {name!r}; valid: heldout, train, {', '.join(BENCHMARKS)}, or a .jsonl path")
    return MathTask(load_jsonl(path), [], seed=0, name=path.stem), None
