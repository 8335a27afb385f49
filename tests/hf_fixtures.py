"""Shared tiny-model helpers for the transformers-backend tests (built once per test session:
the builder is idempotent on a path under the session's base temp folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from policies.hf import HFParams  # noqa: E402
from policies.hf.policy import load_policy  # noqa: E402
from policies.hf.tiny import build_tiny_qwen3  # noqa: E402
from policies.base import PromptBatch  # noqa: E402
from rlvr_env.problems import arithmetic_problems, format_prompt  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny Qwen3 + char tokenizer (the policy=tiny-qwen3 base)."""
    return build_tiny_qwen3(tmp_path_factory.getbasetemp() / "tiny-qwen3" / "base")


def make_policy(path: Path, reference: bool = False, **overrides):
    params = {"max_new_tokens": 8, **overrides}
    return load_policy(HFParams(model_path=str(path), **params), reference)


def arithmetic_prompts(num: int, seed: int = 0) -> PromptBatch:
    problems = arithmetic_problems(num, seed=seed)
    return PromptBatch(index=torch.arange(num), texts=tuple(format_prompt(p, "boxed") for p in problems))
