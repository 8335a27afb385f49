"""Which tabular runs can share one batch of the batched simulator, and why not.

    batch_key(cfg)            equal keys: the runs can share a batch
    unbatchable_reason(cfg)   why a run cannot be batched at all (None: it can)
    check_batchable(configs)  NotBatchable naming the first run that cannot join, and why
"""

from __future__ import annotations

import copy
import json

import torch

from algorithms import Algorithm, ConfigError, build_algorithm

BATCHED_POLICIES = ("tabular", "loglinear")  # the policies over an answer table (AnswerTablePolicy)
# Config fields that may differ between the runs of one batch (everything else must match).
PER_RUN_FIELDS = {"": ("seed", "algo", "reweight", "resume", "arena"), "env": ("seed",),
                  "optim": ("lr", "weight_decay", "max_grad_norm"),
                  "train": ("log_dir", "run_name", "progress", "checkpoint_every", "keep_checkpoints")}


class NotBatchable(ConfigError):
    """These runs cannot share one batch (the message says why); run them as single runs."""


def batch_key(cfg: dict) -> str:
    """Runs whose keys are equal can share a batch: the config without its per-run fields."""
    shared = copy.deepcopy(cfg)
    for section, keys in PER_RUN_FIELDS.items():
        target = shared if not section else shared.get(section, {})
        for key in keys:
            target.pop(key, None)
    return json.dumps(shared, sort_keys=True, default=str)


def unbatchable_reason(cfg: dict) -> str | None:
    """Why this run cannot be batched, or None."""
    policy = cfg.get("policy", {}).get("name")
    if policy not in BATCHED_POLICIES:
        return f"policy {policy!r}: the batched simulator runs the tabular policies only ({', '.join(BATCHED_POLICIES)})"
    if cfg.get("train", {}).get("on_nonfinite") == "skip":
        return "train.on_nonfinite=skip: the batched simulator stops at a non-finite update, it cannot drop one run's"
    rewards, weights = cfg.get("env", {}).get("rewards"), cfg.get("env", {}).get("reward_weights")
    if rewards not in (None, ["verifier"], ("verifier",)) or weights not in (None, [1], [1.0], (1.0,)):
        return (f"env.rewards={rewards}: the batched simulator scores with the verifier's correct-answer table alone "
                "(run_sweep sends such runs to worker processes)")
    return filter_reason(build_algorithm(cfg["algo"], cfg.get("reweight")))


def filter_reason(algo: Algorithm) -> str | None:
    """A filter that resamples or drops groups makes runs differ in batch size."""
    degenerate = torch.zeros(1, 2)  # one group whose rewards all agree
    if algo.filter.max_extra_rounds > 0 or not bool(algo.filter.keep(degenerate).all()):
        return (f"{algo.name}: its filter drops groups (dynamic sampling), so runs would differ in batch "
                "size and sampling rounds; run it unbatched (run_sweep sends it to worker processes)")
    return None


def check_batchable(configs: list[dict]) -> None:
    """Raise NotBatchable naming the first run that cannot join the first run's batch, and why."""
    first = batch_key(configs[0])
    for i, c in enumerate(configs):
        reason = unbatchable_reason(c)
        if reason is not None:
            raise NotBatchable(f"run {i}: {reason}")
        if batch_key(c) != first:
            diff = differing_fields(json.loads(first), json.loads(batch_key(c)))
            raise NotBatchable(f"run {i} differs from run 0 in {', '.join(diff)}; a batch shares everything but "
                               f"its per-run fields (seed, algo, reweight, optim.lr/weight_decay/max_grad_norm, env.seed)")


def differing_fields(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += differing_fields(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}")
    return out
