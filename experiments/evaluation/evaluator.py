"""Evaluate a policy on a task: mean@n, pass@k, maj@k and response statistics, per difficulty.

    evaluate(policy, task, params, exact=None) -> Evaluation

Any ``Policy`` and any ``Task`` (``rlvr_env.protocol``): the policy's own sampler draws n
responses per problem in batches of ``batch_prompts``, the task scores them (the verifier
in bulk for math tasks), answers are extracted for majority voting. Every accuracy gets a
95% bootstrap interval over problems. Where exact success probabilities exist (the
tabular policy on an ``ExactTask``), the exact pass@k = mean of 1 - (1 - p_i)^k sits
beside the estimate. Sampling uses its own seeded generator: evaluating during training
leaves the training run's random stream untouched.
"""

from __future__ import annotations

import math
from collections import defaultdict

import attrs
import numpy as np
import torch
from tqdm import tqdm

from algorithms.registry import integer
from experiments.evaluation.passk import bootstrap_ci, exact_pass_at_k, maj_at_k, pass_at_k
from policies.base import PromptBatch
from rlvr_env.bank import BUCKETS
from rlvr_env.protocol import ExactTask, Task
from rlvr_env.verifier import extract_answer, normalize


def _ks(inst, attribute, value):
    if not value or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in value):
        raise ValueError(f"eval.k: must be a non-empty list of integers >= 1, got {list(value)}")


@attrs.frozen
class EvalParams:
    n: int = attrs.field(default=4, validator=integer(1))
    """Samples per problem (mean@n averages pass@1 over them)."""
    k: tuple[int, ...] = attrs.field(default=(1, 4), converter=tuple, validator=_ks)
    """pass@k and maj@k for each k (values above n are dropped)."""
    max_problems: int | None = attrs.field(default=None, validator=attrs.validators.optional(integer(1)))
    """Evaluate at most this many problems (the first ones of the set)."""
    batch_prompts: int = attrs.field(default=32, validator=integer(1))
    """Problems per sampling call (n responses each)."""
    bootstrap: int = attrs.field(default=1000, validator=integer(0))
    """Bootstrap resamples over problems for the 95% intervals (0: none)."""
    seed: int = 0
    """Seed of the evaluation's sampling generator and of the bootstrap."""


@attrs.frozen
class Evaluation:
    metrics: dict[str, dict[str, dict[str, float]]]
    """group ("all", "level 3", "hard", "subject: Algebra", ...) -> metric -> {value, lo, hi, problems}."""
    samples: list[dict]
    """One row per response: problem id, prompt index, completion, extracted answer, reward."""

    def scalars(self, prefix: str = "eval") -> dict[str, float]:
        """Flat TensorBoard tags: ``eval/mean@4``, ``eval/hard/pass@4``, ..."""
        out = {}
        for group, metrics in self.metrics.items():
            where = "" if group == "all" else group.replace(" ", "_").replace(":", "") + "/"
            out.update({f"{prefix}/{where}{name}": m["value"] for name, m in metrics.items()})
        return out


def problem_groups(task: Task, index: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks [N] of the evaluated problems per group: all, difficulty bucket, level, subject."""
    groups = {"all": np.ones(len(index), dtype=bool)}
    buckets = task.bucket(PromptBatch(index=torch.as_tensor(index), texts=("",) * len(index))).numpy()
    for b, name in enumerate(BUCKETS):
        groups[name] = buckets == b
    problems = getattr(task, "problems", None)  # math tasks carry levels and subjects; the bandit does not
    if problems is not None:
        levels = np.array([problems[i].difficulty or 0 for i in index])
        for level in sorted(set(levels.tolist()) - {0}):
            groups[f"level {level}"] = levels == level
        subjects = np.array([str(problems[i].metadata.get("subject", "")) for i in index])
        for subject in sorted(set(subjects.tolist()) - {""}):
            groups[f"subject: {subject}"] = subjects == subject
    return {g: m for g, m in groups.items() if m.any()}


def problem_ids(task: Task, index: np.ndarray) -> list[str]:
    problems = getattr(task, "problems", None)
    return [problems[i].id if problems is not None else f"{task.name}-{i}" for i in index]


def evaluate(policy, task: Task, params: EvalParams = EvalParams(), exact: ExactTask | None = None,
             progress: bool = False) -> Evaluation:
    """Sample ``params.n`` responses per problem of ``task`` and score them (see module doc)."""
    count = len(task) if params.max_problems is None else min(params.max_problems, len(task))
    index = np.arange(count)
    ks = [k for k in params.k if k <= params.n] or [1]
    generator = torch.Generator().manual_seed(params.seed)
    correct = np.zeros((count, params.n), dtype=bool)
    answers: list[list[str | None]] = []
    lengths = np.zeros((count, params.n))
    truncated = np.full((count, params.n), np.nan)
    samples = []
    ids = problem_ids(task, index)
    with torch.no_grad(), tqdm(total=count, desc="evaluate", disable=not progress, unit="problem") as bar:
        for start in range(0, count, params.batch_prompts):
            rows = index[start:start + params.batch_prompts]
            prompts = PromptBatch(index=torch.as_tensor(rows), texts=tuple(task.texts[i] for i in rows))
            rollout = policy.sample(prompts, params.n, generator)
            rewards = task.rewards(prompts, rollout).numpy()  # (p, n)
            block = slice(start, start + len(rows))
            correct[block] = rewards > 0.5
            lengths[block] = rollout.mask.sum(dim=1).view(len(rows), params.n).numpy()
            if rollout.truncated is not None:
                truncated[block] = rollout.truncated.view(len(rows), params.n).numpy()
            extracted = [extract_answer(t) for t in rollout.texts]
            for r in range(len(rows)):
                answers.append([None if a is None else normalize(a) for a in extracted[r * params.n:(r + 1) * params.n]])
            for b, text in enumerate(rollout.texts):
                r = b // params.n
                samples.append({"problem": ids[start + r], "prompt_index": int(rows[r]), "completion": text,
                                "extracted": extracted[b], "reward": float(rewards[r, b % params.n])})
            bar.update(len(rows))

    per_problem: dict[str, np.ndarray] = {f"mean@{params.n}": correct.mean(axis=1)}
    for k in ks:  # pass@1 is mean@n itself
        if k > 1:
            per_problem[f"pass@{k}"] = pass_at_k(correct, k)
        per_problem[f"maj@{k}"] = maj_at_k(answers, correct, k)
    if exact is not None:
        p = exact.success_probability(policy, torch.as_tensor(index)).double().numpy()
        per_problem["exact_pass@1"] = p
        for k in ks:
            per_problem[f"exact_pass@{k}"] = exact_pass_at_k(p, k)
    per_problem["no_answer_frac"] = np.array([np.mean([a is None for a in row]) for row in answers])
    per_problem["length_mean"] = lengths.mean(axis=1)
    per_problem["length_max"] = lengths.max(axis=1)
    if not np.isnan(truncated).all():
        per_problem["truncated_frac"] = truncated.mean(axis=1)

    metrics: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for group, mask in problem_groups(task, index).items():
        for name, values in per_problem.items():
            v = values[mask]
            value = float(v.max()) if name == "length_max" else float(v.mean())
            lo, hi = (bootstrap_ci(v, params.bootstrap, params.seed) if params.bootstrap and name not in
                      ("length_max",) else (math.nan, math.nan))
            metrics[group][name] = {"value": value, "lo": lo, "hi": hi, "problems": int(mask.sum())}
    return Evaluation(dict(metrics), samples)


@attrs.frozen
class PeriodicEval:
    """The trainer's evaluation hook (``train.eval_every``): ``every`` and ``(policy) -> eval/* tensors``."""

    every: int
    task: Task
    params: EvalParams
    exact: ExactTask | None = None

    def __call__(self, policy) -> dict[str, torch.Tensor]:
        """``eval/accuracy`` (mean@n), ``eval/accuracy_{hard,medium,easy}``, ``eval/level{k}`` and
        ``eval/length_level{k}`` (mean@n and mean tokens per response of level k),
        ``eval/pass@k``, ``eval/maj@k`` (and ``eval/exact_pass@k``), ``eval/length_mean``,
        ``eval/no_answer_frac``."""
        metrics = evaluate(policy, self.task, self.params, exact=self.exact).metrics
        mean = f"mean@{self.params.n}"
        out = {"eval/accuracy": metrics["all"][mean]["value"]}
        for group, values in metrics.items():
            if group in BUCKETS:
                out[f"eval/accuracy_{group}"] = values[mean]["value"]
            elif group.startswith("level "):
                out[f"eval/level{group[6:]}"] = values[mean]["value"]
                out[f"eval/length_level{group[6:]}"] = values["length_mean"]["value"]
        out.update({f"eval/{name}": m["value"] for name, m in metrics["all"].items()
                    if name.startswith(("pass@", "maj@", "exact_pass@")) or name in ("length_mean", "no_answer_frac")})
        return {k: torch.tensor(v) for k, v in out.items()}


def table(evaluation: Evaluation, title: str) -> str:
    """A Markdown table: one row per group, value [95% CI] per metric."""
    names = list(evaluation.metrics["all"])
    lines = [f"### {title}", "", "| group | problems | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for group, metrics in evaluation.metrics.items():
        cells = []
        for name in names:
            m = metrics[name]
            cell = f"{m['value']:.4g}" if name.startswith("length") else f"{m['value']:.4f}"
            if math.isfinite(m["lo"]) and not name.startswith("length"):
                cell += f" [{m['lo']:.3f}, {m['hi']:.3f}]"
            cells.append(cell)
        lines.append(f"| {group} | {metrics[names[0]]['problems']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
