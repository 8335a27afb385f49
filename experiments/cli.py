"""One argument convention for every command: ``KEY=VALUE``, as Hydra's overrides are.

    python -m experiments.run algo=grpo train.steps=50                     the run config (Hydra)
    python -m experiments.evaluate run=RUN_DIR eval.n=8                     the tool's keys ...
    python -m experiments.compare.study algos=[grpo,grpo_hadw] seeds=5 train.steps=100   ... and run-config overrides
    python -m experiments.bench.verify workload=mismatched workers=2

A tool's own keys are the fields of an attrs class (types, defaults, validators, a docstring
each): ``--help`` lists them; a field that is itself an attrs class takes dotted keys
(``eval.n=8``). Values are read as YAML (``5``, ``0.5``, ``true``, ``null``, ``[a,b]``). Where a
tool trains, any other ``KEY=VALUE`` is an override of the run config (``train.steps=20``,
validated when the runs are composed); elsewhere it is refused. A bad key or value ends in
one line, ``error: KEY: ...``, and exit status 2.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from typing import Any

import attrs
import yaml

from algorithms.registry import ConfigError, build_params, field_docs, shown_default, yaml_value  # noqa: F401 (yaml_value: cli's)


def parse_args(argv: Sequence[str] | None, options: type, prog: str, doc: str,
               overrides: bool = False) -> tuple[Any, list[str]]:
    """(``options`` built from the tool's own keys, the other KEY=VALUE arguments as run-config
    overrides); ``--help`` prints ``doc`` and the keys, then exits."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(prog, doc, options, overrides))
        raise SystemExit(0)
    own: dict[str, Any] = {}
    rest = []
    nested = {f.name for f in attrs.fields(options) if _attrs_type(f) is not None}
    for arg in argv:
        if "=" not in arg or arg.startswith("="):
            fail(f"expected KEY=VALUE, got {arg!r} (see {prog} --help)")
        key, value = arg.split("=", 1)
        head = key.split(".", 1)[0]
        if key in fields_of(options) or head in nested:
            try:
                parsed = yaml.safe_load(value) if value else ""
            except yaml.YAMLError:
                parsed = value
            target = own.setdefault(head, {}) if head in nested and "." in key else own
            target[key.split(".", 1)[1] if head in nested and "." in key else key] = parsed
        elif overrides:
            rest.append(arg)
        else:
            fail(f"{key}: unknown key; valid: {', '.join(sorted(fields_of(options)))} (see {prog} --help)")
    try:
        for name in nested & set(own):
            field = attrs.fields_dict(options)[name]
            own[name] = build_params(_attrs_type(field), own[name], name)
        return build_params(options, own, "<key>"), rest
    except ConfigError as exc:
        fail(str(exc).replace("<key>.", ""))


def fail(message: str):
    """The one-line error of a bad argument, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def fields_of(options: type) -> set[str]:
    return {f.name for f in attrs.fields(options)}


def _attrs_type(field) -> type | None:
    kind = field.type
    if isinstance(kind, str):  # postponed annotations: the default's class
        default = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default
        return type(default) if attrs.has(type(default)) else None
    return kind if inspect.isclass(kind) and attrs.has(kind) else None


def help_text(prog: str, doc: str, options: type, overrides: bool) -> str:
    """``doc``, then every key with its default and docstring."""
    lines = [f"usage: {prog} [KEY=VALUE ...]", "", doc.strip(), "", "keys:"]
    for f in attrs.fields(options):
        nested = _attrs_type(f)
        rows = [(f"{f.name}.{g.name}", g, field_docs(nested)) for g in attrs.fields(nested)] if nested else \
            [(f.name, f, field_docs(options))]
        for name, field, docs in rows:
            lines.append(f"  {name}={shown_default(field)}")
            lines += [f"      {line}" for line in docs.get(field.name, "").splitlines()]
    if overrides:
        lines += ["", "Any other KEY=VALUE overrides the run config (python -m experiments.run --help lists it), "
                      "e.g. train.steps=20 optim.lr=0.02."]
    return "\n".join(lines)
