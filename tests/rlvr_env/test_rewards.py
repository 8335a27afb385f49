"""Reward functions named in the config (rlvr_env.rewards): parsing, weights, the row fields a
function gets, the weighted sum with None, and the one-line errors of a failing function."""

import math
import sys

import pytest
import torch

from algorithms.registry import ConfigError, build_params
from policies.base import PromptBatch, Rollout
from rlvr_env.problems import Problem
from rlvr_env.rewards import (RewardFunction, RewardFunctionError, RewardParams, build_reward_functions, call,
                              combine, resolve, verifier)
from rlvr_env.tasks import ArithmeticParams, JsonlParams, MathTask

MODULE = '''
seen = []

def brevity(prompts, completions, **kwargs):
    seen.append(kwargs)
    return [None if c == "skip" else -len(c) / 10 for c in completions]

def subject_bonus(prompts, completions, subject):
    return [1.0 if s == "algebra" else 0.0 for s in subject]

def mean(prompts, completions):
    return [0.0] * len(completions)

def needs_column(prompts, completions, no_such_column):
    return [0.0] * len(completions)

NOT_A_FUNCTION = 3
'''


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_t.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rewards_t"
    sys.modules.pop("my_rewards_t", None)


def rollout(index: list[int], texts: list[str], group_size: int) -> Rollout:
    b = len(texts)
    zeros = torch.zeros(b, 1)
    return Rollout(prompt_index=torch.tensor(index), prompt_tokens=torch.zeros(b, 0, dtype=torch.long),
                   prompt_mask=torch.zeros(b, 0), tokens=torch.zeros(b, 1, dtype=torch.long), mask=torch.ones(b, 1),
                   old_logp=zeros, texts=tuple(texts), group_size=group_size)


def close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), equal_nan=True)


def task(specs, weights=None):
    problems = [Problem("p-0", "What is 1 + 1?", "2", 1, {"subject": "algebra"}),
                Problem("p-1", "What is 2 * 3?", "6", 4, {"subject": "geometry", "solution": "2*3=6"})]
    return MathTask(problems, [], seed=0, rewards=RewardParams(tuple(specs), weights))


def test_weighted_sum_over_the_functions_that_scored(reward_module):
    t = task(["verifier", f"{reward_module}:brevity"], (2.0, 0.5))
    prompts = PromptBatch(index=torch.tensor([0, 1]), texts=(t.texts[0], t.texts[1]))
    texts = [r"\boxed{2}", "skip", r"\boxed{5}", "skip"]  # correct, unscorable by brevity, wrong, ...
    scores = t.reward_scores(prompts, rollout([0, 0, 1, 1], texts, 2))
    b = -len(r"\boxed{2}") / 10
    close(scores.by_function["brevity"], [[b, math.nan], [b, math.nan]])
    assert scores.by_function["verifier"].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    # verifier weight 2, brevity 0.5; "skip" is scored by the verifier alone
    close(scores.total, [[2.0 + 0.5 * b, 0.0], [0.5 * b, 0.0]])


def test_none_from_every_function_is_unscorable(reward_module):
    t = task([f"{reward_module}:brevity"])
    prompts = PromptBatch(index=torch.tensor([1]), texts=(t.texts[1],))
    scores = t.reward_scores(prompts, rollout([1, 1, 1], ["skip", "abcd", "skip"], 3))
    assert torch.isnan(scores.total).tolist() == [[True, False, True]]
    assert scores.total[0, 1].item() == pytest.approx(-0.4)
    close(combine({"a": torch.tensor([[math.nan, 1.0]]), "b": torch.tensor([[math.nan, math.nan]])},
                  {"a": 3.0, "b": 1.0}), [[math.nan, 3.0]])


def test_row_fields_are_aligned_lists_of_every_column(reward_module):
    import my_rewards_t

    t = task([f"{reward_module}:brevity", f"{reward_module}:subject_bonus"])
    prompts = PromptBatch(index=torch.tensor([1, 0]), texts=(t.texts[1], t.texts[0]))
    scores = t.reward_scores(prompts, rollout([1, 1, 0, 0], ["a", "b", "c", "d"], 2))
    assert scores.by_function["subject_bonus"].tolist() == [[0.0, 0.0], [1.0, 1.0]]  # only the column it names
    kwargs = my_rewards_t.seen[-1]
    assert kwargs["answer"] == ["6", "6", "2", "2"]
    assert kwargs["problem"] == ["What is 2 * 3?"] * 2 + ["What is 1 + 1?"] * 2
    assert kwargs["problem_id"] == ["p-1", "p-1", "p-0", "p-0"] and kwargs["difficulty"] == [4, 4, 1, 1]
    assert kwargs["subject"] == ["geometry", "geometry", "algebra", "algebra"]
    assert kwargs["solution"] == ["2*3=6", "2*3=6", None, None]  # a row without the column: None


def test_default_is_the_verifier_alone():
    params = ArithmeticParams()
    assert params.rewards == ("verifier",) and params.reward_weights is None
    (f,) = build_reward_functions(params)
    assert f == RewardFunction("verifier", verifier, 1.0, None) and f.builtin
    assert verifier(["q", "q"], [r"\boxed{1/2}", "0.4"], ["0.5", "0.5"]) == [1.0, 0.0]
    assert resolve("rlvr_env.rewards:verifier", "env.rewards[0]") is verifier


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:fn", r"env.rewards\[1\]: cannot import module 'no_such_module_xyz'"),
    ("{m}:missing", r"env.rewards\[1\]: module 'my_rewards_t' has no 'missing'"),
    ("{m}:NOT_A_FUNCTION", r"env.rewards\[1\]: 'my_rewards_t:NOT_A_FUNCTION' is a int, not a function"),
    ("{m}", r"env.rewards\[1\]: 'my_rewards_t' is no reward function; give 'verifier' or 'pkg.module:function'"),
    ("{m}:needs_column", r"env.rewards\[1\]: my_rewards_t:needs_column takes 'no_such_column', which no row has"),
    ("rlvr_env.rewards:verifier", r"env.rewards\[1\]: a second reward function named 'verifier'"),
    ("{m}:mean", r"env.rewards\[1\]: a reward function may not be named 'mean' \(reward/mean is another metric\)"),
])
def test_bad_specs_are_refused_naming_the_entry(reward_module, spec, message):
    with pytest.raises(ConfigError, match=message):
        task(["verifier", spec.format(m=reward_module)])


@pytest.mark.parametrize("env, message", [
    ({"reward_weights": [1.0, 2.0]}, r"env.reward_weights: has 2 weight\(s\) for 1 reward function\(s\)"),
    ({"reward_weights": [math.inf]}, r"env.reward_weights: must be (finite|a list of finite numbers)"),
    ({"reward_weights": ["x"]}, r"env.reward_weights: must be a list of finite numbers"),
    ({"rewards": "verifier"}, r"env.rewards: must be a non-empty list of reward functions"),
    ({"rewards": []}, r"env.rewards: must be a non-empty list of reward functions"),
])
@pytest.mark.parametrize("cls", [ArithmeticParams, JsonlParams])
def test_bad_reward_settings_name_the_field(cls, env, message):
    with pytest.raises(ConfigError, match=message):
        build_params(cls, env, "env")


def bad(values):
    return lambda prompts, completions: values


@pytest.mark.parametrize("fn, message", [
    (bad((1.0,)), r"reward function f: returned 1 values for 2 completions \(row: p-0 'What is 1 \+ 1\?', the first"),
    (bad(3.0), r"reward function f: returned a float, not a list of 2 numbers or None \(row: p-0"),
    (bad([1.0, "high"]), r"reward function f: returned a non-number 'high' for completion 1 \(row: p-1 'What is 2"),
    (bad([math.nan, 1.0]), r"reward function f: returned a non-finite nan for completion 0 \(row: p-0"),
    (bad([1.0, -math.inf]), r"reward function f: returned a non-finite -inf for completion 1"),
    (bad([True, 1.0]), r"reward function f: returned a non-number True"),
    (lambda prompts, completions: 1 / 0, r"reward function f: raised ZeroDivisionError: division by zero \(row: p-0"),
])
def test_a_failing_function_is_named_with_its_row(fn, message):
    rows = ["p-0 'What is 1 + 1?'", "p-1 'What is 2 * 3?'"]
    with pytest.raises(RewardFunctionError, match=message):
        call(RewardFunction("f", fn), {"prompts": ["a", "b"], "completions": ["x", "y"]}, rows)
