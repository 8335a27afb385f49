"""Worked solutions of generated arithmetic: a scratchpad of intermediate results, then the box.

    worked_steps("94 * 59 - 77")     -> [(94, "*", 59, 5546), (5546, "-", 77, 5469)]
    worked_solution("94 * 59 - 77")  -> "94*59=5546; 5546-77=5469; \\boxed{5469}"

One step per operation, in the order a shunting-yard applies them (operator precedence, then
left to right, parentheses first): the warm-start targets of ``env=arithmetic_scratchpad``
(``policies.hf.tiny.warm_start``). A negative right operand is written in parentheses
(``5-(-4)=9``), so every step reads as one true equation. The reward stays the verifier's
verdict on the boxed answer; the steps are not scored.
"""

from __future__ import annotations

import re

SCRATCHPAD_INSTRUCTION = ("Work it out one operation at a time, writing each result (like 2*3=6;), "
                          "then put your final answer within \\boxed{}.")

Step = tuple[int, str, int, int]
"""(left, operator, right, result) of one operation."""

_PREC = {"+": 1, "-": 1, "*": 2}
_STEP = re.compile(r"(-?\d+)([+\-*])(\(-\d+\)|\d+)=(-?\d+)")


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def worked_steps(expr: str) -> list[Step]:
    """The operations of ``expr`` (integers, + - *, parentheses, as ``rlvr_env.problems``
    generates them) in evaluation order; ``[]`` for a lone number."""
    tokens = expr.replace("(", " ( ").replace(")", " ) ").split()
    values: list[int] = []
    ops: list[str] = []
    steps: list[Step] = []

    def reduce():
        b, a, op = values.pop(), values.pop(), ops.pop()
        values.append(_apply(a, op, b))
        steps.append((a, op, b, values[-1]))

    for tok in tokens:
        if tok.isdigit():
            values.append(int(tok))
        elif tok == "(":
            ops.append(tok)
        elif tok == ")":
            while ops[-1] != "(":
                reduce()
            ops.pop()
        elif tok in _PREC:
            while ops and ops[-1] != "(" and _PREC[ops[-1]] >= _PREC[tok]:
                reduce()
            ops.append(tok)
        else:
            raise ValueError(f"not a generated arithmetic expression: {expr!r} (token {tok!r})")
    while ops:
        reduce()
    if len(values) != 1:
        raise ValueError(f"not a generated arithmetic expression: {expr!r}")
    return steps


def expression_value(expr: str, steps: list[Step] | None = None) -> int:
    """The integer value of ``expr``: its last step's result (a lone number: itself); ``steps``:
    its ``worked_steps`` where the caller has them already."""
    steps = worked_steps(expr) if steps is None else steps
    return steps[-1][3] if steps else int(expr.strip("() "))


def format_step(step: Step) -> str:
    a, op, b, c = step
    return f"{a}{op}{b if b >= 0 else f'({b})'}={c};"


def worked_solution(expr: str) -> str:
    """The scratchpad of ``expr`` (one ``a<op>b=c;`` per operation, space-separated) and ``\\boxed{value}``."""
    steps = worked_steps(expr)
    return " ".join([*(format_step(s) for s in steps), f"\\boxed{{{expression_value(expr, steps)}}}"])


def written_steps(text: str) -> list[Step]:
    """The ``a<op>b=c`` equations written in ``text`` (a scratchpad or a model's completion), as
    written (the result is not checked)."""
    return [(int(a), op, int(b.strip("()")), int(c)) for a, op, b, c in _STEP.findall(text)]
