"""Reward functions as TRL takes them: plain callables, several with weights, named in the config.

    env.rewards=[verifier,my_rewards:brevity] env.reward_weights=[1.0,0.1]

A reward function is ``fn(prompts, completions, **row_fields) -> list[float | None]``: one
value per completion, ``None`` where it cannot score that completion. Every argument is a
keyword list aligned with ``completions`` (``ROW_FIELDS``, then every other column of the
problem's row, ``Problem.metadata``); a function that takes ``**kwargs`` gets them all, as
in TRL, one without gets only the ones it names. ``verifier`` is the built-in one (the math
verifier against the reference answer; the task scores it with its cache and worker pool).

The training reward of a completion is sum_i w_i * r_i over the functions that scored it;
a completion no function scored is *unscorable* (NaN in the [P, G] total): advantage 0,
and it does not enter its group's baseline. A function that raises, or returns anything
other than one finite number or None per completion, raises ``RewardFunctionError`` naming
it and the row (the trainer stops the run with it).
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
from collections.abc import Callable, Sequence

import attrs
import torch

from algorithms.registry import ConfigError, FieldError
from rlvr_env.problems import Problem
from rlvr_env.verifier_pool import verify_batch

BUILTIN = "verifier"
ROW_FIELDS = ("prompts", "completions", "answer", "problem", "problem_id", "difficulty")
"""The keyword lists every reward function may take: the formatted prompt texts, the completion
texts, the reference answer, the question as written in the source, the problem's id and level
(None where it has none); every other column of the row follows (``Problem.metadata``)."""

RESERVED = ("mean", "unscorable_frac")
"""Names a reward function may not have: reward/mean and reward/unscorable_frac are other metrics."""


def verifier(prompts: Sequence[str], completions: Sequence[str], answer: Sequence[str], **kwargs) -> list[float]:
    """The math verifier: 1.0 where a completion's final answer equals its reference ``answer``, else 0.0."""
    return [v.reward for v in verify_batch(list(completions), list(answer))]


class RewardFunctionError(ValueError):
    """A reward function raised or returned something else than one finite number or None per completion."""


def _specs(inst, attribute, value):
    if not isinstance(value, tuple) or not value or not all(isinstance(s, str) and s.strip() for s in value):
        raise FieldError(attribute.name, f"must be a non-empty list of reward functions ('{BUILTIN}' or "
                                         f"'pkg.module:function'), got {value!r}")


def _weights(inst, attribute, value):
    if value is None:
        return
    if not isinstance(value, tuple) or not all(
            isinstance(w, numbers.Real) and not isinstance(w, bool) and math.isfinite(w) for w in value):
        raise FieldError(attribute.name, f"must be a list of finite numbers (one per env.rewards entry), got {value!r}")


def _as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


@attrs.frozen
class RewardParams:
    """The reward settings of a text task (env=arithmetic, env=jsonl, ...)."""

    rewards: tuple[str, ...] = attrs.field(default=(BUILTIN,), converter=_as_tuple, validator=_specs)
    """Reward functions ``fn(prompts, completions, **row_fields) -> list[float | None]``, each
    ``verifier`` (the math verifier) or ``pkg.module:function`` (importable: on PYTHONPATH); each
    is logged as ``reward/<function name>`` (README "Your own reward function")."""
    reward_weights: tuple[float, ...] | None = attrs.field(default=None, converter=_as_tuple, validator=_weights)
    """Weight of each of ``rewards`` in the training reward sum_i w_i * r_i (None: all 1.0)."""

    def __attrs_post_init__(self):
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise FieldError("reward_weights", f"has {len(self.reward_weights)} weight(s) for {len(self.rewards)} "
                                               f"reward function(s) (env.rewards={list(self.rewards)}): give one each")


@attrs.frozen
class RewardFunction:
    """One of a task's reward functions."""

    name: str
    """Its name in the metrics (``reward/<name>``): the function's ``__name__``."""
    fn: Callable
    weight: float = 1.0
    takes: frozenset[str] | None = None
    """The keywords it names; None: it takes ``**kwargs`` (every field)."""

    @property
    def builtin(self) -> bool:
        return self.fn is verifier


def keywords(fn: Callable) -> frozenset[str] | None:
    """The keyword arguments ``fn`` accepts; None where it takes ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def resolve(spec: str, field: str) -> Callable:
    """The callable of ``verifier`` or ``pkg.module:function``; a ConfigError naming ``field`` otherwise."""
    spec = spec.strip()
    if spec == BUILTIN:
        return verifier
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{field}: {spec!r} is no reward function; give '{BUILTIN}' or 'pkg.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{field}: cannot import module {module_name!r} of {spec!r} ({exc}); put its folder on "
                          "PYTHONPATH") from None
    except Exception as exc:  # the module itself fails to import
        raise ConfigError(f"{field}: importing {module_name!r} of {spec!r} failed: {type(exc).__name__}: {exc}") from None
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ConfigError(f"{field}: module {module_name!r} has no {attr!r} ({getattr(module, '__file__', '')})")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ConfigError(f"{field}: {spec!r} is a {type(fn).__name__}, not a function")
    return fn


def build_reward_functions(params: RewardParams, fields: Sequence[str] = ROW_FIELDS) -> tuple[RewardFunction, ...]:
    """The reward functions of ``params``, checked: importable, distinct names, and taking no
    keyword the rows lack (``fields``: the row fields available)."""
    weights = params.reward_weights or (1.0,) * len(params.rewards)
    out: list[RewardFunction] = []
    for i, (spec, weight) in enumerate(zip(params.rewards, weights)):
        field = f"env.rewards[{i}]"
        fn = resolve(spec, field)
        name = getattr(fn, "__name__", None) or spec.rpartition(":")[2]
        if name in RESERVED:
            raise ConfigError(f"{field}: a reward function may not be named {name!r} (reward/{name} is another "
                              "metric); rename it")
        if name in (f.name for f in out):
            raise ConfigError(f"{field}: a second reward function named {name!r} (logged as reward/{name}); "
                              "give each a distinct name")
        takes = keywords(fn)
        if takes is not None:
            missing = sorted(takes - set(fields))
            if missing or not {"prompts", "completions"} <= takes:
                what = (f"takes {missing[0]!r}, which no row has" if missing
                        else "must take the keywords prompts and completions")
                raise ConfigError(f"{field}: {spec} {what} (row fields: {', '.join(fields)}; a **kwargs parameter "
                                  "takes them all)")
        out.append(RewardFunction(name, fn, float(weight), takes))
    return tuple(out)


def row_fields(problems: Sequence[Problem]) -> tuple[str, ...]:
    """``ROW_FIELDS`` and every metadata column of ``problems``."""
    extra = dict.fromkeys(k for p in problems for k in p.metadata if k not in ROW_FIELDS)
    return ROW_FIELDS + tuple(extra)


def describe_row(problem: Problem, prompt: str) -> str:
    """``id 'first chars of the prompt...'`` (what an error names)."""
    text = " ".join(prompt.split())
    return f"{problem.id} {text[:40] + '...' if len(text) > 40 else text!r}"


def call(function: RewardFunction, kwargs: dict[str, list], rows: Sequence[str]) -> list[float]:
    """``function`` on the batch: its values (NaN for None), checked; ``rows`` [B] names each completion's row."""
    given = kwargs if function.takes is None else {k: v for k, v in kwargs.items() if k in function.takes}
    count = len(kwargs["completions"])
    where = f"reward function {function.name}"
    try:
        values = function.fn(**given)
    except Exception as exc:  # the user's code: whatever it raises stops the run, named
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise RewardFunctionError(f"{where}: raised {detail} (row: {rows[0]}, the first of {count} completions)") from exc
    if not isinstance(values, (list, tuple)):
        raise RewardFunctionError(f"{where}: returned a {type(values).__name__}, not a list of {count} numbers or None "
                                  f"(row: {rows[0]}, the first of {count} completions)")
    if len(values) != count:
        raise RewardFunctionError(f"{where}: returned {len(values)} values for {count} completions "
                                  f"(row: {rows[0]}, the first of the batch)")
    out = []
    for b, v in enumerate(values):
        if v is None:
            out.append(math.nan)
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            what = "a non-finite" if isinstance(v, numbers.Real) and not isinstance(v, bool) else "a non-number"
            raise RewardFunctionError(f"{where}: returned {what} {v!r} for completion {b} (row: {rows[b]}); "
                                      "return a finite number, or None for unscorable")
        out.append(float(v))
    return out


@attrs.frozen
class RewardScores:
    """A step's training rewards: the weighted total and each function's values."""

    total: torch.Tensor
    """[P, G] sum_i w_i * r_i over the functions that scored each completion; NaN: unscorable."""
    by_function: dict[str, torch.Tensor]
    """name -> [P, G] that function's values (NaN where it returned None)."""


def combine(values: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """sum_i w_i * r_i over the scored entries of each [P, G] value; NaN where none scored."""
    stacked = torch.stack(list(values.values()))  # (F, P, G)
    w = torch.tensor([weights[k] for k in values], dtype=stacked.dtype).view(-1, 1, 1)
    scored = ~torch.isnan(stacked)
    total = torch.where(scored, stacked * w, torch.zeros((), dtype=stacked.dtype)).sum(0)
    return torch.where(scored.any(0), total, torch.full_like(total, math.nan))
