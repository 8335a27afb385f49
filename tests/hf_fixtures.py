"""Shared tiny-model helpers for the transformers-backend tests (built once per test session:
the builder is idempotent on a path under the session's base temp folder).

``DEVICE`` (``RLVR_TEST_DEVICE``, default ``cpu``) is where ``make_policy`` puts its model, in
float32: the same tests pass on the CPU and, with ``RLVR_TEST_DEVICE=cuda`` (``bash .ci/gpu``),
on a GPU. Rollouts stay on the CPU; ``logprobs`` are on ``DEVICE`` (compare with ``host``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from policies.hf import HFParams  # noqa: E402
from policies.hf.policy import load_policy  # noqa: E402
from policies.hf.tiny import build_tiny_qwen3  # noqa: E402
from policies.base import PromptBatch  # noqa: E402
from rlvr_env.problems import arithmetic_problems, format_prompt  # noqa: E402


DEVICE = os.environ.get("RLVR_TEST_DEVICE", "cpu")
"""Where the device-aware tests run their models: ``cpu`` or ``cuda``."""


def host(x: torch.Tensor) -> torch.Tensor:
    """``x`` on the CPU, where rollouts live (to compare a policy's output with them)."""
    return x.detach().cpu()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny Qwen3 + char tokenizer (the policy=tiny-qwen3 base)."""
    return build_tiny_qwen3(tmp_path_factory.getbasetemp() / "tiny-qwen3" / "base")


def make_policy(path: Path, reference: bool = False, **overrides):
    """A policy on ``DEVICE`` in float32 (unless ``overrides`` say otherwise)."""
    params = {"max_new_tokens": 8, "device": DEVICE, "dtype": "float32", **overrides}
    return load_policy(HFParams(model_path=str(path), **params), reference)


def arithmetic_prompts(num: int, seed: int = 0) -> PromptBatch:
    problems = arithmetic_problems(num, seed=seed)
    return PromptBatch(index=torch.arange(num), texts=tuple(format_prompt(p, "boxed") for p in problems))
