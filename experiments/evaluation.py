"""Held-out accuracy per difficulty level: mean@n with the policy's own sampler.

    evaluate(policy, problems, n) -> {"eval/accuracy": ..., "eval/level1": ..., ...}

Each problem is answered ``n`` times by ``policy.sample`` (its temperature, top-p, top-k and
budget), every completion is scored by the verifier, and the accuracy of a level is the
mean over its problems and samples. ``HeldOutEval`` is the trainer's hook: a fixed problem
set disjoint from the training bank and a fixed sampling seed, so that evaluations at
different steps differ only by the policy (and the training RNGs are never touched).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch

from algorithms.registry import ConfigError, build_params, integer
from policies.base import AnswerDistribution, PromptBatch
from policies.tiny_qwen3 import in_held_out_split
from rlvr_env.problems import Problem, arithmetic_problems, format_prompt
from rlvr_env.tasks import ArithmeticTask
from rlvr_env.verifier import verify_batch


def evaluate(policy, problems: Sequence[Problem], n: int, *, template: str = "boxed",
             generator: torch.Generator | None = None, prompts_per_batch: int = 64) -> dict[str, float]:
    """Mean@n accuracy over ``problems``, overall (``eval/accuracy``) and per difficulty level
    (``eval/level{k}``; problems without a level count only overall)."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    correct: list[float] = []
    for start in range(0, len(problems), prompts_per_batch):
        chunk = problems[start:start + prompts_per_batch]
        prompts = PromptBatch(index=torch.arange(start, start + len(chunk)),
                              texts=tuple(format_prompt(p, template) for p in chunk))
        rollout = policy.sample(prompts, n, generator)  # (len(chunk) * n) responses, prompt-major
        answers = [p.answer for p in chunk for _ in range(n)]
        correct += [v.reward for v in verify_batch(list(rollout.texts), answers)]
    per_problem = torch.tensor(correct, dtype=torch.float64).view(len(problems), n).mean(dim=1)  # (N,)
    out = {"eval/accuracy": float(per_problem.mean())}
    levels = torch.tensor([p.difficulty or 0 for p in problems])
    for level in sorted(set(levels.tolist()) - {0}):
        out[f"eval/level{level}"] = float(per_problem[levels == level].mean())
    return out


@attrs.frozen
class EvalParams:
    every: int = attrs.field(default=0, validator=integer(0))
    """Evaluate every N steps, at step 0 and before the last update (0: never)."""
    num_problems: int = attrs.field(default=200, validator=integer(1))
    """Held-out problems (the env's levels in turn), disjoint from the training bank."""
    samples: int = attrs.field(default=4, validator=integer(1))
    """n: completions per problem (mean@n)."""
    seed: int = attrs.field(default=2027, validator=integer(0))
    """Seed of the held-out problem set and of the sampling noise (the same at every evaluation)."""


class HeldOutEval:
    """The trainer's evaluation hook: ``every`` and ``(policy) -> metrics``."""

    def __init__(self, params: EvalParams, problems: list[Problem], template: str):
        self.every = params.every
        self.params = params
        self.problems = problems
        self.template = template

    def __call__(self, policy) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.params.seed)
        values = evaluate(policy, self.problems, self.params.samples, template=self.template, generator=generator)
        return {k: torch.tensor(v) for k, v in values.items()}


def held_out_arithmetic(num: int, levels: Sequence[int], seed: int, exclude: Sequence[Problem] = ()) -> list[Problem]:
    """``num`` distinct arithmetic problems (levels in turn) from the held-out split that warm
    starts never train on (``in_held_out_split``), whose questions are not in ``exclude``."""
    seen = {p.prompt for p in exclude}
    by_level: dict[int, list[Problem]] = {lv: [] for lv in levels}
    for p in arithmetic_problems(80 * num, levels, seed):
        if p.prompt not in seen and in_held_out_split(p.prompt):
            seen.add(p.prompt)
            by_level[p.difficulty].append(p)
    per_level = -(-num // len(levels))
    short = [lv for lv, found in by_level.items() if len(found) < per_level]
    if short:
        raise ConfigError(f"eval.num_problems: level {short[0]} has only {len(by_level[short[0]])} held-out problems, "
                          f"{per_level} needed")
    return [by_level[lv][i] for i in range(per_level) for lv in levels][:num]


def build_evaluator(cfg, task, policy) -> HeldOutEval | None:
    """The held-out evaluation of a run config (``eval`` section), or None when it is off."""
    params = build_params(EvalParams, cfg or {}, "eval")
    if params.every == 0:
        return None
    if isinstance(policy, AnswerDistribution):
        raise ConfigError("eval.every: held-out evaluation needs a text policy (the tabular policy answers only "
                          "the prompts of its table); set eval.every=0")
    if not isinstance(task, ArithmeticTask):
        raise ConfigError(f"eval.every: held-out evaluation is implemented for env=arithmetic, not env {task.name!r}")
    held_out = held_out_arithmetic(params.num_problems, task.params.levels, params.seed, exclude=task.problems)
    return HeldOutEval(params, held_out, task.params.template)
