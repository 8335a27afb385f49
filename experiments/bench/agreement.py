"""Agreement of our verifier with math-verify's default ``parse`` / ``verify`` on pairs built from data.

    pairs = agreement_pairs(data_dir)            # fixed: references, renderings, distractors
    report = agreement(pairs)                    # ours and math-verify's verdict per pair

References come from the benchmark files (MATH500 answers and solutions, OlympiadBench,
Minerva, AIME, AMC, GSM8K); each is rendered as a completion in one of several forms (boxed,
inline math, Minerva's "Final Answer", display math, plain text) and paired with itself and
with another reference (a distractor) in the same form. math-verify reads the reference as its
README does (``$ref$`` for a bare answer). Every disagreement gets a reason (``explain``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import attrs

FILES = {"math500": None, "olympiadbench": 120, "minervamath": 80, "aime24": None, "aime25": None,
         "amc2023": None, "gsm8k_test": 100}
"""Benchmark file -> how many of its first references (None: all)."""

FORMS = {
    "boxed": "Adding up the cases, the answer is $\\boxed{{{}}}$.",
    "inline": "Putting it together, we get ${}$",
    "minerva": "Final Answer: The final answer is ${}$. I hope it is correct.",
    "display": "Therefore\n\\[\n{}\n\\]",
    "answer_is": "The answer is {}.",
}


@attrs.frozen
class Pair:
    form: str
    reference: str
    completion: str
    source: str


def agreement_pairs(data_dir: str | Path) -> list[Pair]:
    """The fixed pair set: every reference in one form (cycling) with itself and a distractor;
    100 MATH500 solutions as completions and 100 as references; the GSM8K solutions (``#### N``)
    as completions."""
    from rlvr_env import load_jsonl

    rows = []
    for name, limit in FILES.items():
        rows += [(name, p) for p in load_jsonl(Path(data_dir) / f"{name}.jsonl", limit=limit)]
    pairs, n, forms = [], len(rows), list(FORMS)
    for i, (name, problem) in enumerate(rows):
        form = forms[i % len(forms)]
        other = next(rows[(i * 7 + 3 + k) % n][1].answer for k in range(n)
                     if rows[(i * 7 + 3 + k) % n][1].answer != problem.answer)
        pairs.append(Pair(form, problem.answer, FORMS[form].format(problem.answer), name))
        pairs.append(Pair(form + "/distractor", problem.answer, FORMS[form].format(other), name))
    math500 = [p for name, p in rows if name == "math500"]
    pairs += [Pair("solution", p.answer, p.metadata["solution"], "math500") for p in math500[:100]]
    pairs += [Pair("reference_solution", p.metadata["solution"], f"\\boxed{{{p.answer}}}", "math500")
              for p in math500[100:200]]
    pairs += [Pair("solution", p.answer, p.metadata["solution"], "gsm8k_test") for _, p in rows if _ == "gsm8k_test"]
    return pairs


def math_verify_gold(reference: str) -> str:
    """How math-verify's README gives a reference to ``parse``: inline math unless it already
    has delimiters or a box."""
    s = reference.strip()
    return s if s.startswith(("$", "\\[", "\\(")) or "\\boxed" in s else f"${s}$"


def math_verify_verdict(reference: str, completion: str) -> float:
    from math_verify import parse, verify

    return float(bool(verify(parse(math_verify_gold(reference)), parse(completion))))


def explain(pair: Pair, ours: float) -> str:
    """Why our verdict differs from math-verify's on ``pair`` (one of the documented differences)."""
    from math_verify import parse

    from rlvr_env.verifier import differ_in_case_only, parse_completion, reference

    theirs, mine = parse(pair.completion), parse_completion(pair.completion, 5)
    ref = reference(pair.reference)
    if "####" in pair.completion:
        return "GSM8K's '####' marks the final answer: we read what follows it"
    if ours == 1 and theirs and all(isinstance(x, str) for x in theirs):
        return f"math-verify cannot parse the answer {theirs[-1]!r}; we read it again as inline math"
    if ours == 0 and [str(x) for x in theirs] != [str(x) for x in mine]:
        return f"number glued to a letter: math-verify reads {theirs[-1]!r}, we read {mine[-1] if mine else None!r}"
    if ours == 0 and theirs and differ_in_case_only(str(parse(math_verify_gold(pair.reference))[-1]), str(theirs[-1])):
        return "case differs: math-verify lowercases symbols"
    if ref.text != math_verify_gold(pair.reference):
        return f"reference read as {ref.text[:60]!r} (math-verify: {math_verify_gold(pair.reference)[:60]!r})"
    if ours == 1:
        return "identical answer strings: math-verify's two parses differ"
    return "other"


def agreement(pairs: Iterable[Pair], verdicts: list[float] | None = None) -> dict:
    """{"pairs", "agree", "by_form": {form: (agree, n)}, "disagreements": [(pair, ours, theirs, reason)]}.
    ``verdicts``: our rewards for ``pairs`` if already computed (else ``verify_batch``)."""
    from rlvr_env import verify_batch

    pairs = list(pairs)
    if verdicts is None:
        verdicts = [v.reward for v in verify_batch([p.completion for p in pairs], [p.reference for p in pairs])]
    theirs = [math_verify_verdict(p.reference, p.completion) for p in pairs]
    by_form: dict[str, list[int]] = {}
    disagreements = []
    for pair, a, b in zip(pairs, verdicts, theirs):
        counts = by_form.setdefault(pair.form, [0, 0])
        counts[0] += a == b
        counts[1] += 1
        if a != b:
            disagreements.append((pair, a, b, explain(pair, a)))
    return {"pairs": len(pairs), "agree": len(pairs) - len(disagreements),
            "by_form": {k: tuple(v) for k, v in by_form.items()}, "disagreements": disagreements}


def print_agreement(report: dict) -> None:
    n, agree = report["pairs"], report["agree"]
    print(f"agreement with math-verify's default parse/verify: {agree}/{n} pairs = {agree / n:.2%}")
    print("  by form: " + ", ".join(f"{form} {a}/{m}" for form, (a, m) in report["by_form"].items()))
    for pair, ours, theirs, reason in report["disagreements"]:
        print(f"  - [{pair.source} {pair.form}] ours {ours:.0f}, math-verify {theirs:.0f}: {reason}\n"
              f"      reference {pair.reference[:70]!r}\n      completion {pair.completion[-70:]!r}")
