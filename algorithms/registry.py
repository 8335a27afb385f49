"""Small, typed registries for the pipeline stages.

Each stage (advantage, reweighter, loss, aggregation, ...) is a registry of pure
functions (or tiny classes when they hold state). A registry entry pairs the callable
with an ``attrs`` params class: its fields are the stage's hyperparameters, each with a
validator and a one-line docstring. ``Registry.build(cfg)`` validates ``cfg`` once and
binds it, so the training loop only ever sees ``stage(tensors...)``.

Unknown names and bad values fail at build time with a message that names the config
path (``reweight.lambda_scale``) and, for names, lists the valid options.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the offending field."""


@attrs.frozen
class NoParams:
    """A stage without hyperparameters."""


@attrs.frozen
class Entry:
    name: str
    target: Callable[..., Any]
    params: type
    doc: str
    meta: dict = attrs.field(factory=dict)
    """Free-form facts about the entry (e.g. which aggregations a loss requires)."""


class Registry:
    """Name -> stage factory. One fixed call signature per registry (see ``kind``)."""

    def __init__(self, kind: str, signature: str):
        self.kind = kind
        self.signature = signature
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, params: type = NoParams, **meta):
        """Decorator: register a function (bound with its params as keywords) or a class
        (instantiated with its params object). ``meta`` is kept on the entry."""

        def deco(target):
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            if not attrs.has(params):
                raise TypeError(f"params of {self.kind} {name!r} must be an attrs class")
            if not inspect.isclass(target):
                _check_keywords(self.kind, name, target, params)
            doc = " ".join((inspect.getdoc(target) or "").split("\n\n")[0].split())  # the first paragraph, whole
            self._entries[name] = Entry(name, target, params, doc, meta)
            return target

        return deco

    def unregister(self, name: str) -> None:
        """Remove an entry (a test's or a plugin's own, when it is done)."""
        self.entry(name)  # unknown names: the usual error
        del self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str, where: str | None = None) -> Entry:
        if name not in self._entries:
            where = where or self.kind
            raise ConfigError(
                f"{where}.name: unknown {self.kind} {name!r}; valid: {', '.join(self.names())}"
            )
        return self._entries[name]

    def make_params(self, cfg: Mapping[str, Any], where: str | None = None):
        """Validate ``cfg`` (a mapping with ``name`` and hyperparameters) into a params object."""
        where = where or self.kind
        cfg = dict(cfg)
        name = cfg.pop("name", None)
        if name is None:
            raise ConfigError(f"{where}.name: missing; valid: {', '.join(self.names())}")
        entry = self.entry(name, where)
        custom = getattr(entry.params, "from_config", None)  # a params class that reads its config itself
        if custom is None:
            self._check_foreign_fields(entry, cfg, where)
        return entry, (custom(cfg, where) if custom is not None else build_params(entry.params, cfg, where))

    def _check_foreign_fields(self, entry: Entry, cfg: Mapping[str, Any], where: str) -> None:
        """A field of another stage left by a preset after ``WHERE.name=`` changed (``algo=grpo
        algo.advantage.name=rloo`` keeps grpo's ``eps``): say so and how to drop it."""
        known = {f.name for f in attrs.fields(entry.params)}
        for key in sorted(set(cfg) - known):
            owners = sorted(e.name for e in self._entries.values() if key in {f.name for f in attrs.fields(e.params)})
            if owners:
                raise ConfigError(f"{unknown_field(where, key, known)}; {entry.name} does not take it "
                                  f"({', '.join(owners)} do): drop the preset's value with ~{where}.{key}")

    def build(self, cfg: Mapping[str, Any], where: str | None = None):
        """Return the bound stage: ``partial(fn, **params)`` or ``Class(params)``."""
        entry, params = self.make_params(cfg, where)
        if inspect.isclass(entry.target):
            return entry.target(params)
        bound = functools.partial(entry.target, **attrs.asdict(params, recurse=False))
        functools.update_wrapper(bound, entry.target)
        return bound

    def describe(self) -> str:
        lines = [f"{self.kind} ({self.signature}):"]
        for e in self._entries.values():
            fields = ", ".join(f"{f.name}={shown_default(f)}" for f in attrs.fields(e.params))
            lines.append(f"  {e.name:<24} {e.doc}" + (f"  [{fields}]" if fields else ""))
        return "\n".join(lines)


def shown_default(field: attrs.Attribute) -> str:
    """A field's default as a user writes it (``0.2``, ``null``, ``{}``), ``(required)`` where
    it has none; a nested params class as its fields (``lora={r: 0, ...}``)."""
    default = field.default
    if default is attrs.NOTHING:
        return "(required)"
    if isinstance(default, attrs.Factory):
        if default.takes_self:
            return "(computed)"
        default = default.factory()
    return yaml_value(attrs.asdict(default) if attrs.has(type(default)) else default)


def yaml_value(value: Any) -> str:
    """How a value is written on the command line (YAML flow style: 5, true, null, [1, 4])."""
    import yaml

    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, (str, int, float, bool, list, dict, type(None))):
        return str(value)
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip().removesuffix("...").strip()


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of an attrs class (the house convention), by field name;
    inherited fields included. Empty where the source is not available."""
    import ast
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def build_params(cls: type, cfg: Mapping[str, Any], where: str):
    """Instantiate an attrs params class from a mapping, with errors naming ``where.field``."""
    known = {f.name for f in attrs.fields(cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(unknown_field(where, unknown[0], known))
    missing = [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING and f.name not in cfg]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: missing (required, no default)")
    for field in attrs.fields(cls):
        if field.name in cfg:
            check_kind(field, cfg[field.name], f"{where}.{field.name}")
    try:
        return cls(**cfg)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}.{_field_of(exc)}: {exc}") from None


def unknown_field(where: str, name: str, known) -> str:
    """The error of a key that is not a field: the valid ones, and the closest by spelling."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return (f"{f'{where}.' if where else ''}{name}: unknown field; valid fields: {', '.join(sorted(known)) or 'none'}"
            + (f"; did you mean {close[0]}?" if close else ""))


def _kinds(annotation: Any) -> list[str]:
    """The parts of a field's annotation, as text: ``"bool | None"`` -> ``["bool", "None"]``."""
    text = annotation if isinstance(annotation, str) else annotation.__name__ if isinstance(annotation, type) else str(annotation)
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char in "[(" and 1 or char in "])" and -1 or 0
        if char == "|" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip().removeprefix("typing.") for p in parts]


SEQUENCES = ("tuple", "list", "Sequence")


def check_kind(field: attrs.Attribute, value: Any, key: str) -> None:
    """What every field of its annotated type must be, checked once for every params class:
    ``bool``: true or false (not ``no``, ``1``, ``maybe``); ``float``: finite; ``tuple[...]`` /
    ``list[...]`` (converted by ``tuple`` / ``list`` or not at all): a list, its float items
    finite. A ConfigError naming ``key``."""
    kinds = _kinds(field.type)
    if value is None and "None" in kinds:
        return
    kinds = [k for k in kinds if k != "None"]
    if kinds == ["bool"] and not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    if "float" in kinds and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be finite, got {value!r}")
    sequence = [k for k in kinds if k.split("[", 1)[0] in SEQUENCES]
    if sequence and len(kinds) == 1 and field.converter in (None, tuple, list):  # a converter of its own may take a scalar
        if not isinstance(value, (list, tuple)):
            default = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default
            example = f"{key}=[{','.join(map(str, default))}]" if isinstance(default, (list, tuple)) and default else f"{key}=[...]"
            raise ConfigError(f"{key}: a list is expected (e.g. {example}), got {value!r}")
        if "float" in sequence[0] and any(isinstance(v, float) and not math.isfinite(v) for v in value):
            raise ConfigError(f"{key}: must be finite, got {list(value)!r}")


def _field_of(exc: Exception) -> str:
    return getattr(exc, "field", "?")


def _check_keywords(kind: str, name: str, fn: Callable, params: type) -> None:
    sig = inspect.signature(fn)
    kw = {p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}
    fields = {f.name for f in attrs.fields(params)}
    if kw != fields:
        raise TypeError(
            f"{kind} {name!r}: keyword-only parameters {sorted(kw)} must equal params fields {sorted(fields)}"
        )


# ---------------------------------------------------------------- validators
# attrs validators that raise ValueError carrying the field name, so that
# build_params can prefix the config path.


class FieldError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _check(pred: Callable[[Any], bool], what: str):
    def validator(inst, attribute, value):
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(attribute.name, f"must be a number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise FieldError(attribute.name, f"must be finite, got {value!r}")
        if not pred(value):
            raise FieldError(attribute.name, f"must be {what}, got {value!r}")

    return validator


def gt(bound: float):
    return _check(lambda v: v > bound, f"> {bound}")


def ge(bound: float):
    return _check(lambda v: v >= bound, f">= {bound}")


def between(lo: float, hi: float):
    """Closed interval [lo, hi]."""
    return _check(lambda v: lo <= v <= hi, f"in [{lo}, {hi}]")


def integer(min_value: int):
    def validator(inst, attribute, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(attribute.name, f"must be an integer, got {value!r}")
        if value < min_value:
            raise FieldError(attribute.name, f"must be >= {min_value}, got {value!r}")

    return validator


def one_of(*choices: str):
    def validator(inst, attribute, value):
        if value not in choices:
            raise FieldError(attribute.name, f"must be one of {', '.join(choices)}; got {value!r}")

    return validator


def each_of(*choices: str):
    """A list whose items are among ``choices``, each at most once."""
    def validator(inst, attribute, value):
        for item in value:
            if item not in choices:
                raise FieldError(attribute.name, f"each must be one of {', '.join(choices)}; got {item!r}")
        if len(set(value)) < len(value):
            raise FieldError(attribute.name, f"each at most once; got {list(value)!r}")

    return validator
