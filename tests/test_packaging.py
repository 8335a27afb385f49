"""pyproject.toml asks its dependencies only for what they provide (pip warns otherwise)."""

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def missing_extras(requirements: list[str]) -> list[str]:
    """'dist[extra]' for each extra a requirement asks of an installed distribution that the
    distribution does not list, spelled exactly (pip before PEP 685 compares spellings)."""
    missing = []
    for req in map(Requirement, requirements):
        try:
            provided = set(importlib.metadata.metadata(req.name).get_all("Provides-Extra") or ())
        except importlib.metadata.PackageNotFoundError:
            continue
        missing += [f"{req.name}[{extra}]" for extra in sorted(req.extras - provided)]
    return missing


def test_dependencies_ask_only_for_extras_they_provide():
    assert missing_extras(["math-verify[antlr4_9_3]"]) == ["math-verify[antlr4_9_3]"]  # the old spelling
    assert missing_extras(["math-verify[antlr4-9-3]"]) == []
    groups = PYPROJECT["project"]["optional-dependencies"].values()
    assert missing_extras(PYPROJECT["project"]["dependencies"] + [r for group in groups for r in group]) == []


def test_antlr_runtime_is_the_pinned_one_and_math_verify_parses_latex():
    pins = [Requirement(r) for r in PYPROJECT["project"]["dependencies"] if r.startswith("antlr4-python3-runtime")]
    assert len(pins) == 1 and pins[0].specifier.contains(importlib.metadata.version("antlr4-python3-runtime"))
    from math_verify import parse, verify

    assert verify(parse(r"$\frac{1}{2}$"), parse(r"$0.5$"))


def test_wandb_is_an_extra_and_in_what_ci_installs():
    """train.loggers=[...,wandb]: the wandb extra (named in the missing-package error), and in dev so
    that CI's .[dev,llm] runs the offline W&B tests."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert [Requirement(r).name for r in extras["wandb"]] == ["wandb"]
    assert "wandb" in {Requirement(r).name for r in extras["dev"]}
