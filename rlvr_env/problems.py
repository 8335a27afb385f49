"""Problem sources with a common ``Problem`` record: an arithmetic generator and JSONL loaders.

JSONL formats recognised (one JSON object per line; ``ROW_FORMATS``):
    MATH500        problem, solution, answer, subject, level (1-5)
    AIME / AMC / Minerva / OlympiadBench     problem, answer
    GSM8K          question, answer ("... #### N")
A malformed row raises ``ProblemFormatError`` naming the file and line (``rlvr_env.sources.load_jsonl``). Parquet files, datasets
folders, a column mapping and the checks every source goes through: ``rlvr_env.sources``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import attrs
import numpy as np

from algorithms.registry import ConfigError
from rlvr_env.scratchpad import SCRATCHPAD_INSTRUCTION, expression_value

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
TEMPLATES = ("plain", "boxed", "chat", "scratchpad")


class ProblemFormatError(ConfigError):
    """A data row that is not a recognised problem format, or fails a check; the message names
    file and line (a ConfigError: every entry point ends it with one ``error:`` line)."""


@attrs.frozen
class Problem:
    id: str
    """Unique id, e.g. ``math500-17`` (source name and line) or ``arith-L3-0042``."""
    prompt: str
    """The question as written in the source."""
    answer: str
    """The reference final answer (a string the verifier understands)."""
    difficulty: int | None = None
    """Level 1 (easiest) .. 5, where the source has one."""
    metadata: dict = attrs.field(factory=dict)
    """Anything else from the source (subject, solution, every column not read into the fields above)."""
    location: str | None = attrs.field(default=None, eq=False, repr=False)
    """Where the row is, for messages: ``FILE:LINE`` (JSONL) or ``FILE[row N]``; not compared."""


# ----------------------------------------------------------------- arithmetic generator

# level -> (max operand digits, number of operations, use parentheses)
ARITHMETIC_LEVELS = {1: (1, 1, False), 2: (2, 1, False), 3: (2, 2, False), 4: (2, 3, True), 5: (3, 4, True)}


def _expression(rng: np.random.Generator, digits: int, ops: int, parens: bool) -> str:
    terms = [str(int(rng.integers(1, 10**digits))) for _ in range(ops + 1)]
    operators = [str(rng.choice(["+", "-", "*"])) for _ in range(ops)]
    if parens and ops >= 2:
        i = int(rng.integers(0, ops))  # wrap terms i and i + 1
        terms[i], terms[i + 1] = f"({terms[i]}", f"{terms[i + 1]})"
    out = terms[0]
    for op, term in zip(operators, terms[1:]):
        out += f" {op} {term}"
    return out


def _evaluate(expr: str) -> int:
    """Integer value of a generated expression: the last result of its worked solution (a
    shunting-yard over + - * and parentheses, ``rlvr_env.scratchpad.worked_steps``).

    Only ever called on expressions this module generated (never on model output).
    """
    return expression_value(expr)


HELD_OUT_FRACTION = 4  # one question in 4 (by a hash of its text) belongs to the held-out split


def in_held_out_split(question: str) -> bool:
    """The held-out split of generated problems, fixed by a hash of the question: supervised
    warm starts never train on these; ``env.heldout`` evaluation draws only from them."""
    return zlib.crc32(question.encode()) % HELD_OUT_FRACTION == 0


def arithmetic_problems(num: int, levels=(1, 2, 3, 4, 5), seed: int = 0) -> list[Problem]:
    """``num`` seeded arithmetic problems, levels cycling through ``levels``."""
    bad = [lv for lv in levels if lv not in ARITHMETIC_LEVELS]
    if bad or not levels:
        raise ValueError(f"arithmetic levels must be in {sorted(ARITHMETIC_LEVELS)}, got {list(levels)}")
    rng = np.random.default_rng(seed)
    problems = []
    for i in range(num):
        level = levels[i % len(levels)]
        expr = _expression(rng, *ARITHMETIC_LEVELS[level])
        problems.append(Problem(id=f"arith-L{level}-{i:05d}", prompt=f"What is {expr}?", answer=str(_evaluate(expr)),
                                difficulty=level, metadata={"expression": expr}))
    return problems


# ----------------------------------------------------------------- JSONL loader


def _gsm8k_answer(text: str) -> str:
    if "####" not in text:
        raise KeyError("answer without '#### N'")
    answer = text.rsplit("####", 1)[1].strip().replace(",", "")
    if not answer:
        raise KeyError("empty answer after '####'")
    return answer


def _gsm8k_row(row: dict, pid: str) -> Problem:
    question, answer = row["question"], row["answer"]
    if not isinstance(question, str) or not isinstance(answer, str):
        raise KeyError("question and answer must be strings")
    others = {k: v for k, v in row.items() if k not in ("question", "answer")}
    return Problem(pid, question, _gsm8k_answer(answer), None, {"solution": answer, **others})


def _math_row(row: dict, pid: str) -> Problem:
    problem, answer = row["problem"], row["answer"]
    if not isinstance(problem, str) or not isinstance(answer, (str, int, float)) or isinstance(answer, bool):
        raise KeyError("problem must be a string and answer a string or number")
    level = row.get("level")
    if level is not None and (not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 5):
        raise KeyError(f"level must be an integer 1-5, got {level!r}")
    if not str(answer).strip():
        raise KeyError("empty answer (a reference that matches nothing)")
    metadata = {k: v for k, v in row.items() if k not in ("problem", "answer", "level")}
    return Problem(pid, problem, str(answer), level, metadata)


@attrs.frozen
class RowFormat:
    name: str
    keys: tuple[str, ...]
    """The keys a row of this format has (the first format whose keys a row has reads it)."""
    read: Callable[[dict, str], Problem]
    """(row, problem id) -> Problem; KeyError with the reason for a malformed row."""
    doc: str


ROW_FORMATS = {f.name: f for f in [
    RowFormat("gsm8k", ("question", "answer"), _gsm8k_row, 'GSM8K: answer "... #### N"'),
    RowFormat("math", ("problem", "answer"), _math_row, "MATH500 / AIME / AMC / Minerva / OlympiadBench; level 1-5 optional"),
]}
"""The JSONL row formats, by name."""


# ----------------------------------------------------------------- prompt templates


def format_prompt(problem: Problem, template: str = "boxed", tokenizer=None) -> str:
    """The text a policy reads.

    plain: the question; boxed: the question and the instruction to box the final answer
    (not repeated where the source already has it); chat: the boxed text as a user turn of
    the tokenizer's chat template, with the generation prompt; scratchpad: the question and the
    instruction to write each intermediate result before the box (``rlvr_env.scratchpad``).
    """
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {', '.join(TEMPLATES)}, got {template!r}")
    if template == "plain":
        return problem.prompt
    if template == "scratchpad":
        return f"{problem.prompt}\n{SCRATCHPAD_INSTRUCTION}"
    text = problem.prompt if BOXED_INSTRUCTION in problem.prompt else f"{problem.prompt}\n{BOXED_INSTRUCTION}"
    if template == "boxed":
        return text
    if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("template 'chat' needs a tokenizer with a chat template")
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
