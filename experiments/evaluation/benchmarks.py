"""The benchmarks (``rlvr_env.datasets.BENCHMARKS``) as env presets and as evaluation targets.

    register_env_presets()                   env=math500, env=gsm8k, ... (Hydra's ConfigStore)
    benchmark_task(name, trainer, cfg)       python -m experiments.evaluate benchmark=NAME
"""

from __future__ import annotations

from typing import Any

from algorithms import ConfigError
from policies.base import AnswerDistribution
from rlvr_env.datasets import BENCHMARKS
from rlvr_env.protocol import exact_view
from rlvr_env.sources import MAX_ANSWER_CHARS, MAX_ROW_BYTES, PARQUET_SUFFIXES, fit_context, load_problems
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
    env = cfg["env"]
    data_dir = env.get("data_dir")
    checks = {"max_answer_chars": env.get("max_answer_chars", MAX_ANSWER_CHARS),
              "max_row_bytes": env.get("max_row_bytes", MAX_ROW_BYTES)}
    if name in BENCHMARKS:
        path = resolve_data_file(BENCHMARKS[name].eval_path, data_dir, "benchmark")
    elif name.endswith((".jsonl", *PARQUET_SUFFIXES)) or "/" in name:
        path = resolve_data_file(name, data_dir, "benchmark")
        checks["columns"] = env.get("columns")  # the env's own column mapping, as for training
    else:
        raise ConfigError(f"benchmark: unknown {name!r}; valid: heldout, train, {', '.join(BENCHMARKS)}, or a .jsonl "
                          "or .parquet path (or a datasets folder, as a path with a /)")
    template = env.get("template", "boxed")
    problems = fit_context(load_problems(path, **checks), template, policy, env.get("max_prompt_tokens"), "benchmark")
    return MathTask(problems, [], seed=0, template=template, name=path.stem if path.is_file() else path.name), None
