"""Worked solutions of arithmetic (the scratchpad env's warm-start targets), its prompt, its
presets, and the per-level length metrics."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.training.metrics import LENGTH_LEVELS, level_lengths, problem_levels
from rlvr_env import ArithmeticParams, ArithmeticTask
from rlvr_env.problems import ARITHMETIC_LEVELS, BOXED_INSTRUCTION, _evaluate, arithmetic_problems, format_prompt
from rlvr_env.scratchpad import SCRATCHPAD_INSTRUCTION, worked_solution, worked_steps, written_steps
from rlvr_env.verifier import extract_answer


@pytest.mark.parametrize("expr, want", [
    ("3 + 4", "3+4=7; \\boxed{7}"),
    ("94 * 59 - 77", "94*59=5546; 5546-77=5469; \\boxed{5469}"),
    ("7 - 2 * 3", "2*3=6; 7-6=1; \\boxed{1}"),                          # * before -
    ("1 + 2 * 3 - 4", "2*3=6; 1+6=7; 7-4=3; \\boxed{3}"),               # then left to right
    ("8 - 3 - 2", "8-3=5; 5-2=3; \\boxed{3}"),                          # - is left-associative
    ("(2 + 3) * 4 - 1 * 2", "2+3=5; 5*4=20; 1*2=2; 20-2=18; \\boxed{18}"),  # parentheses first
    ("5 - (3 - 7)", "3-7=-4; 5-(-4)=9; \\boxed{9}"),                    # a negative right operand in parentheses
    ("2 - 9 * 3", "9*3=27; 2-27=-25; \\boxed{-25}"),
    ("6 * (1 - 8)", "1-8=-7; 6*(-7)=-42; \\boxed{-42}"),
    ("(1 - 8) * 6", "1-8=-7; -7*6=-42; \\boxed{-42}"),
])
def test_worked_solutions_by_hand(expr, want):
    assert worked_solution(expr) == want
    assert extract_answer(want) == str(_evaluate(expr))  # the verifier reads the box, not the steps


def test_steps_and_malformed_expressions():
    assert worked_steps("12") == [] and worked_solution("12") == "\\boxed{12}"
    assert written_steps("3-7=-4; 5-(-4)=9; \\boxed{9}") == [(3, "-", 7, -4), (5, "-", -4, 9)]
    assert written_steps("no working \\boxed{3}") == []
    for bad in ("3 / 4", "3 +", "3 4"):
        with pytest.raises((ValueError, IndexError)):
            worked_steps(bad)


def _check(expr: str, value: int) -> None:
    text = worked_solution(expr)
    steps = written_steps(text)
    assert steps == worked_steps(expr)  # every step is written and read back as it is
    assert len(steps) == sum(expr.count(op) for op in "+-*")  # one step per operation
    for a, op, b, c in steps:
        assert c == (a + b if op == "+" else a - b if op == "-" else a * b)  # each written step is true
    if steps:
        assert steps[-1][3] == value
    assert text.endswith(f"\\boxed{{{value}}}") and extract_answer(text) == str(value)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), level=st.sampled_from(sorted(ARITHMETIC_LEVELS)))
def test_generated_problems_last_step_is_the_answer(seed, level):
    (p,) = arithmetic_problems(1, (level,), seed)
    _check(p.metadata["expression"], int(p.answer))


def _render(tree) -> str:
    if isinstance(tree, int):
        return str(tree)
    op, left, right, parens = tree
    text = f"{_render(left)} {op} {_render(right)}"
    return f"({text})" if parens else text


trees = st.recursive(st.integers(1, 999),
                     lambda sub: st.tuples(st.sampled_from("+-*"), sub, sub, st.booleans()), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_any_nesting_follows_precedence(tree):
    expr = _render(tree)
    _check(expr, eval(expr))  # noqa: S307  (an expression of integers and + - * ( ) built just above)


def test_scratchpad_prompt_and_env():
    (p,) = arithmetic_problems(1, (3,), seed=0)
    text = format_prompt(p, "scratchpad")
    assert text == f"{p.prompt}\n{SCRATCHPAD_INSTRUCTION}" and BOXED_INSTRUCTION not in text and "\\boxed{}" in text
    task = ArithmeticTask(ArithmeticParams(num_problems=20, heldout=5, template="scratchpad"), seed=0)
    assert all(t.endswith(SCRATCHPAD_INSTRUCTION) for t in task.texts)
    assert task.score(0, worked_solution(task.problems[0].metadata["expression"])) == 1.0  # the box is scored


def test_presets_compose_with_a_budget_for_the_longest_scratchpad():
    from experiments.training.build import compose_config
    from policies.hf.tiny import char_tokenizer

    cfg = compose_config("policy=tiny-qwen3", "env=arithmetic_scratchpad")
    assert cfg["env"]["name"] == "arithmetic" and cfg["env"]["template"] == "scratchpad"
    assert cfg["policy"]["warm_start"]["template"] == "scratchpad" and list(cfg["policy"]["warm_start"]["levels"]) == [1, 2]
    assert cfg["env"]["num_problems"] == 4096 and cfg["eval"]["max_problems"] == 500
    tokenizer = char_tokenizer()
    worst = worked_solution("999 * 999 * 999 * 999 * 999")  # level 5's longest: 4 steps, a 15-digit box
    longest = max(len(tokenizer(worked_solution(p.metadata["expression"]))["input_ids"])
                  for p in arithmetic_problems(2000, (5,), seed=1))
    assert longest <= len(tokenizer(worst)["input_ids"]) and len(tokenizer(worst)["input_ids"]) + 1 <= \
        cfg["policy"]["max_new_tokens"]  # + the stop token
    assert compose_config("policy=tiny-qwen3", "env=arithmetic")["policy"]["max_new_tokens"] == 16  # unchanged


def test_level_lengths_by_hand():
    class Problem:
        def __init__(self, difficulty):
            self.difficulty = difficulty

    class Task:
        problems = [Problem(1), Problem(2), Problem(5), Problem(None)]

    class Rollout:
        prompt_index = torch.tensor([0, 0, 2, 2, 3, 3])
        mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 1, 0]])
        prompt_tokens = torch.ones(6, 4, dtype=torch.long)  # a language model's prompts

    levels = problem_levels(Task())
    assert levels.tolist() == [1, 2, 5, 0]
    m = level_lengths(Rollout(), levels)
    assert set(m) == {LENGTH_LEVELS[0], LENGTH_LEVELS[1], LENGTH_LEVELS[4]}  # the task's levels, every step
    assert float(m["response/length_level1"]) == 1.5 and float(m["response/length_level5"]) == 3.0
    assert torch.isnan(m["response/length_level2"])  # none sampled this step
    Rollout.prompt_tokens = torch.ones(6, 0, dtype=torch.long)  # an answer-table policy: one token per answer
    assert level_lengths(Rollout(), levels) == {}
    assert problem_levels(type("Bandit", (), {})()) is None
