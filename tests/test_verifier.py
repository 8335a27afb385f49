"""Extraction and equivalence on hand-made cases, the shared benchmarks, hostile output."""

import time
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from rlvr_env import load_jsonl
from rlvr_env.verifier import VerifyConfig, extract_answer, last_boxed, plain_number, sympy_equivalent, verify, verify_batch
from rlvr_env.verifier_pool import VerifierPool
from tests.verifier_cases import CASES

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data folder {DATA} is absent")


def test_case_table_is_large_enough():
    assert len(CASES) >= 40
    assert {r for _, _, r in CASES} == {0, 1}


@pytest.mark.parametrize("completion, answer, reward", CASES)
def test_hand_made_cases(completion, answer, reward):
    verdict = verify(completion, answer)
    assert verdict.reward == reward, verdict
    assert verdict.reason == ("correct" if reward else verdict.reason)


def test_extraction_rules():
    assert last_boxed(r"a \boxed{1} b \boxed{\frac{2}{3}} c") == r"\frac{2}{3}"
    assert last_boxed(r"\boxed{a{b{c}}d}") == "a{b{c}}d"
    assert last_boxed(r"\boxed 7.") == "7."
    assert last_boxed(r"\boxed{unclosed") is None
    assert extract_answer("#### 1,234") == "1,234"
    assert extract_answer("So the answer is $12$.") == "12"
    assert extract_answer("x = 3, y = -4.5") == "-4.5"
    assert extract_answer(r"\boxed{") is None  # a malformed box is no answer, not "last number"
    assert extract_answer("12 and 13", extractors=("boxed",)) is None
    # the last number stands alone: digits glued to a word, identifier, version or path are not one
    for text in ("pwned_3", "x2", "v1.2.3", "1.2.3", "step_000200", "runs/200", "3rd", "H2O", "x_2"):
        assert extract_answer(text) is None, text
    assert extract_answer("we get 12, then x2 and step_3") == "12"
    assert extract_answer("the answer is 42.") == "42"
    assert extract_answer("we get 42.") == "42"
    assert extract_answer("x = -3.5") == "-3.5"
    assert extract_answer("it costs $1,000.") == "1000"
    assert extract_answer("a rise of 5%") == "5"
    assert extract_answer("so x=.5") == ".5"
    assert extract_answer("5-3") == "3"  # a minus after a digit is subtraction, not a sign
    assert extract_answer("a ratio of 3 / 4") == "3/4"
    with pytest.raises(ValueError, match="extractors"):
        VerifyConfig(extractors=("nope",))


def test_verdict_reasons():
    assert verify("nothing here", "5").reason == "no_answer"
    assert verify(r"\boxed{6}", "5").reason == "wrong"
    assert verify(r"\boxed{" + "1" * 600 + "}", "5").reason == "answer_too_long"
    assert verify(None, "5").reason.startswith("error")


@needs_data
def test_math500_reference_solutions_verify():
    rows = load_jsonl(DATA / "math500.jsonl")
    ok = sum(verify(p.metadata["solution"], p.answer).reward for p in rows)
    assert ok / len(rows) >= 0.99
    # another row's answer is rejected (the few rows with an equal answer are real matches)
    accepted = sum(verify(rf"\boxed{{{rows[(i + 1) % len(rows)].answer}}}", p.answer).reward for i, p in enumerate(rows))
    assert accepted / len(rows) <= 0.01


@needs_data
def test_gsm8k_reference_answers_verify():
    rows = load_jsonl(DATA / "gsm8k_test.jsonl")
    ok = sum(verify(p.metadata["solution"], p.answer).reward for p in rows)
    assert ok == len(rows)


HOSTILE = [  # scored against the answer "5"
    "x" * 1_000_000,
    "pwned_5", "x5", "v1.2.5", "step_000005", "runs/5", "5th",  # a 5 that is no number
    "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "{" * 10_000,
    r"\boxed{__import__('os').system('touch /tmp/rlvr_pwned')}",
    r"\boxed{2^{2^{2^{30}}}}",
    r"\boxed{9^{9^{9^{9^{9}}}}}",
    r"\boxed{10^{10^{10}}!}",
    r"\boxed{\int_0^{\infty} e^{x^{x^{x}}} dx}",
    "1 " * 200_000,
]


def test_hostile_completions_return_fast_score_zero_and_execute_nothing():
    marker = Path("/tmp/rlvr_pwned")
    marker.unlink(missing_ok=True)
    config = VerifyConfig(timeout=2)
    for text in HOSTILE:
        start = time.monotonic()
        verdict = verify(text, "5", config)
        assert verdict.reward == 0.0, verdict
        assert time.monotonic() - start < 3 * config.timeout + 1, text[:40]
    with VerifierPool(2, config, in_process_seconds=0) as pool:  # every sympy item in a worker
        start = time.monotonic()
        verdicts = pool.map(HOSTILE, ["5"] * len(HOSTILE))
        assert pool.last_counts["sympy_here"] == 0 and pool.last_counts["sympy_workers"] >= 4
    assert [v.reward for v in verdicts] == [0.0] * len(HOSTILE)
    assert time.monotonic() - start < len(HOSTILE) * (3 * config.timeout + 1)
    assert not marker.exists()


def test_verify_batch_keeps_order_and_matches_verify():
    completions = [rf"\boxed{{\frac{{{i}}}{{4}}}}" if i % 3 else ("no answer" if i % 2 else rf"\boxed{{{i}}}")
                   for i in range(40)]
    answers = [str(i / 4 if i % 2 else i + 1) for i in range(40)]
    expected = [verify(c, a) for c, a in zip(completions, answers)]
    assert {v.reason for v in expected} == {"correct", "wrong", "no_answer"}
    assert verify_batch(completions, answers, workers=2) == expected
    with VerifierPool(2, in_process_seconds=0) as pool:
        assert pool.map(completions, answers) == expected
        assert pool.last_counts == {"cheap": 7 + 7, "sympy_here": 0, "sympy_workers": 26}
    # a group shares one answer (normalized once), and bad input gets the verdict verify gives it
    group = [r"\boxed{\frac{1}{2}}", r"\boxed{0.50}", "the answer is $.5$", r"\boxed{1/3}", None, "#### 0.5"]
    answers = ["0.5"] * 5 + [["0.5"]]
    assert verify_batch(group, answers) == [verify(c, a) for c, a in zip(group, answers)]
    assert [v.reward for v in verify_batch(group, answers)] == [1, 1, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="completions but"):
        verify_batch(["a"], [])


numbers = st.one_of(st.integers(-10**15 + 1, 10**15 - 1).map(str),
                    st.decimals(-10**6, 10**6, places=6, allow_nan=False, allow_infinity=False).map(lambda d: f"{d:f}"),
                    st.sampled_from(["0", "-0", "007", ".5", "-.5", "0.50", "1.000001", "1.000010"]))


@settings(max_examples=150, deadline=None)
@given(numbers, numbers, st.sampled_from(["other", "same", "nudged"]))
def test_plain_number_fast_path_agrees_with_math_verify(x, y, how):
    if how == "same":  # the same value with six decimals
        y = f"{Decimal(x):.6f}"
    elif how == "nudged":  # one millionth away
        y = f"{Decimal(x) + Decimal('0.000001'):f}"
    fx, fy = plain_number(x), plain_number(y)
    assert fx is not None and fy is not None
    assert (fx == fy) == sympy_equivalent(x, y, timeout=10)
