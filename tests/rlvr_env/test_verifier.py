"""The verifier: hand-made cases by family, properties, the cheap path against math-verify, the
shared benchmarks, hostile output, one verdict per pair in every process."""

import json
import logging
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from math_verify import parse, verify as mv_verify

from rlvr_env import load_jsonl
from rlvr_env.verifier import (VerifyConfig, cheap_verdict, extract_answer, parse_completion, plain_number, reference,
                               sympy_verdict, verify_here)
from rlvr_env.verifier_pool import verify, verify_batch
from rlvr_env.verifier_pool import VerifierPool
from rlvr_env.datasets import default_data_dir
from tests.conftest import ROOT
from tests.rlvr_env.verifier_cases import CASES, FAMILY_CASES

DATA = default_data_dir()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data folder {DATA} is absent")
logging.getLogger("math_verify").setLevel(logging.ERROR)  # its timeout warnings, expected below

FAMILIES = {"ref_delimited", "ref_solution", "unboxed", "multi_boxed", "relation", "matrix", "text", "number",
            "identity", "false_positive", "identifier"}


def test_case_tables_cover_every_family_both_ways():
    assert len(FAMILY_CASES) >= 60 and len(CASES) >= 40
    assert {f for f, *_ in FAMILY_CASES} == FAMILIES
    for family in FAMILIES - {"false_positive"}:
        assert {r for f, _, _, r in FAMILY_CASES if f == family} == {0, 1}, family


@pytest.mark.parametrize("family, answer, completion, reward", FAMILY_CASES)
def test_family_cases(family, answer, completion, reward):
    verdict = verify_here(completion, answer)
    assert verdict.reward == reward, verdict
    assert verdict.reason == "correct" if reward else verdict.reason != "correct"


@pytest.mark.parametrize("completion, answer, reward", CASES)
def test_hand_made_cases(completion, answer, reward):
    assert verify_here(completion, answer).reward == reward


def test_verify_batch_gives_the_in_process_verdicts():
    completions = [c for _, _, c, _ in FAMILY_CASES] + [c for c, _, _ in CASES]
    answers = [a for _, a, _, _ in FAMILY_CASES] + [a for _, a, _ in CASES]
    assert verify_batch(completions, answers) == [verify_here(c, a) for c, a in zip(completions, answers)]
    assert verify(completions[0], answers[0]) == verify_here(completions[0], answers[0])


def test_old_false_positives_are_wrong_now():
    """Each paid the policy for a wrong answer in the extraction we replaced."""
    assert verify_here(r"so the ratio is \frac{1+\sqrt5}{2}", "2").reason == "no_answer"  # not the "2" of a fraction
    for completion, answer in ((r"\boxed{\Gamma}", r"\gamma"), (r"\boxed{X^2}", "x^2"), (r"\boxed{\Delta x}", r"\delta x"),
                               (r"\boxed{A+b}", "a+b")):
        assert verify_here(completion, answer).reward == 0, (completion, answer)
        assert verify_here(completion.lower(), answer).reward == 1  # the same letters in the reference's case
    for word, spelled in (("Yes", "yes"), (r"\text{(B)}", "b"), ("Evelyn", r"\text{evelyn}")):  # words, choices: any case
        assert verify_here(rf"\boxed{{{spelled}}}", word).reward == 1
    for empty in ("", "  ", "$$", r"\boxed{}", "#### ", "."):
        for completion in (r"\boxed{.}", r"\boxed{}", "", "0", empty):
            verdict = verify_here(completion, empty)
            assert verdict.reward == 0 and verdict.reason == "error: empty reference", (completion, empty)


def test_repeated_boxes_are_linear_and_the_bound_covers_the_whole_verdict():
    """40,000 characters of \\boxed{ took 5 s in the quadratic scan; the cheap path is linear and
    reads only the last max_completion_chars."""
    for text in ("\\boxed{" * 6_000, "\\boxed{1}" * 5_000, "a\\boxed{" * 40_000):
        start = time.monotonic()
        assert cheap_verdict(text, reference("5"), VerifyConfig()) is None  # several boxes: math-verify decides
        assert time.monotonic() - start < 0.5
        start = time.monotonic()
        assert verify_here(text, "5", VerifyConfig(timeout=1)).reward == 0
        assert time.monotonic() - start < 3 * 1 + 1


def test_numbers_glued_to_a_word_are_no_answers():
    """Stricter than math-verify on purpose; elsewhere its extraction is ours, pattern for pattern."""
    for text in ("it came 3rd", "5th", "version 1.2.3", "in 2nd place"):
        assert parse(text), text  # math-verify reads a number here
    assert not parse_completion("it came 3rd", 3) and not parse_completion("5th", 3)
    assert extract_answer("7 points, in 2nd place") == "7" and extract_answer("version 1.2.3") is None
    for text in ("pwned_3", "x2", "v1.2.3", "step_000200", "runs/200", "H2O", "x_2"):
        assert not parse_completion(text, 3) and not parse(text), text
    texts = [c for _, _, c, _ in FAMILY_CASES if "nd " not in c and "3rd" not in c and "5th" not in c] + \
        ["x = 3, y = -4.5", "it costs $1,000.", "a rise of 5%", "The answer is 1 000.", "so x=.5", "3 / 4 of it"]
    for text in texts:
        assert [str(x) for x in parse_completion(text, 3)] == [str(x) for x in parse(text)], text


def test_verdict_reasons():
    assert verify_here("nothing here", "5").reason == "no_answer"
    assert verify_here(r"\boxed{6}", "5").reason == "wrong"
    assert verify_here(r"\boxed{" + "1" * 600 + "}", "5").reason == "answer_too_long"
    assert verify_here(r"The answer is $" + "1" * 600 + "$", "5").reason == "answer_too_long"
    assert verify_here(None, "5").reason.startswith("error")
    assert verify_here(r"\boxed{5}", 5).reason.startswith("error: answer must be str")
    assert verify_batch([r"\boxed{5}"], [None])[0].reason.startswith("error: answer must be str")
    with pytest.raises(ValueError, match="completions but"):
        verify_batch(["a"], [])
    with pytest.raises(ValueError, match="timeout"):
        VerifyConfig(timeout=1.5)


def test_references_in_every_form():
    for answer in ("5", "$5$", "$$5$$", r"\[5\]", r"\(5\)", "$5$.", r"so it is $\boxed{5}$.", "... #### 5", "#### 5"):
        assert verify_here(r"\boxed{5}", answer).reward == 1, answer
        assert verify_here(r"\boxed{6}", answer).reward == 0, answer
    assert reference("Total\n#### 1,234").bare == "1234"
    assert verify_here(r"\boxed{1234}", "#### 1,234").reward == 1


# ----------------------------------------------------------------- properties

small = st.integers(-10**6, 10**6)
FORMS = (r"\boxed{{{}}}", "${}$", "The answer is {}.", r"\boxed{{\frac{{{}}}{{1}}}}", r"$\frac{{{}}}{{1}}$")


@settings(max_examples=150, deadline=None)
@given(small, small, st.sampled_from(FORMS), st.sampled_from(FORMS))
def test_different_integers_are_wrong_in_every_form(a, b, ref_form, form):
    if a == b:
        b += 1
    assert verify_here(form.format(b), str(a)).reward == 0
    assert verify_here(form.format(a), str(a)).reward == 1
    assert verify_here(form.format(b), ref_form.format(a)).reward == 0


def data_references():
    refs = []
    for name in ("math500", "olympiadbench", "minervamath", "aime24", "aime25", "amc2023", "gsm8k_test"):
        path = DATA / f"{name}.jsonl"
        refs += [p.answer for p in load_jsonl(path)] if path.is_file() else []
    return refs or ["5"]


REFERENCES = data_references()
math_like = st.one_of(st.sampled_from(REFERENCES), small.map(str),
                      st.builds(lambda a, b: rf"\frac{{{a}}}{{{b}}}", small, st.integers(1, 99)),
                      st.builds(lambda a, b: f"({a},{b})", small, small),
                      st.sampled_from([r"\sqrt{2}", r"x^2+1", r"\{1,2\}", r"[0,1)", r"\text{odd}", r"\pi", "x=3"]))


@needs_data
@settings(max_examples=200, deadline=None)
@given(math_like)
def test_a_reference_matches_itself_boxed_or_in_inline_math(ref):
    assert verify_here(rf"\boxed{{{ref}}}", ref).reward == 1, ref
    if "$" not in ref and "\n" not in ref and "\\boxed" not in ref:
        assert verify_here(f"${ref}$", ref).reward == 1, ref


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
    assert (fx == fy) == mv_verify(parse(f"${y}$"), parse(rf"\boxed{{{x}}}"))


# the cheap path decides only where it gives math-verify's verdict: completions built around one box
box_texts = st.tuples(
    st.sampled_from(["", "We add them up. ", "So the final answer is ", "**Final Answer**\n", "Final Answer: ",
                     "The final answer: the sum is ", "$x=1$ and then ", "Hence $", "\\[\n", "The answer is $6$, no: "]),
    st.sampled_from(["", "$", "$.", ".", "\n\\]", "\\%", "$\\%", " percent", " and $7$", ". Final answer is 8",
                     " \\boxed{9}", " \\fbox{9}", " or 7", "\nI hope it is correct."]))


@needs_data
@settings(max_examples=300, deadline=None)
@given(box_texts, st.one_of(math_like, small.map(str)), st.one_of(math_like, small.map(str), st.just("")))
def test_cheap_path_gives_the_math_verify_verdict(around, ref, content):
    completion = f"{around[0]}\\boxed{{{content}}}{around[1]}"
    config = VerifyConfig()
    cheap = cheap_verdict(completion, reference(ref), config)
    if cheap is not None and not (cheap.reward == 1 and content.split() == ref.split()):  # identical: correct, always
        assert cheap.reward == sympy_verdict(completion, reference(ref), config).reward, (completion, ref, cheap)


# ----------------------------------------------------------------- data


@pytest.mark.slow
@needs_data
def test_math500_references_accepted_boxed_and_other_rows_rejected():
    rows = load_jsonl(DATA / "math500.jsonl")
    answers = [p.answer for p in rows]
    assert [v.reward for v in verify_batch([rf"\boxed{{{a}}}" for a in answers], answers)] == [1.0] * len(rows)
    assert [v.reward for v in verify_batch([p.metadata["solution"] for p in rows], answers)] == [1.0] * len(rows)
    others = answers[1:] + answers[:1]
    accepted = [(a, b) for a, b, v in zip(answers, others, verify_batch([rf"\boxed{{{b}}}" for b in others], answers))
                if v.reward]
    assert accepted and all(b == a or b.endswith("=" + a) for a, b in accepted), accepted  # real matches only


@needs_data
def test_gsm8k_solutions_and_references_verify():
    rows = load_jsonl(DATA / "gsm8k_test.jsonl")
    answers = [p.answer for p in rows]
    assert [v.reward for v in verify_batch([p.metadata["solution"] for p in rows], answers)] == [1.0] * len(rows)
    assert verify_here(r"\boxed{18}", rows[0].metadata["solution"]).reward == 1  # the whole "... #### 18" as reference


# ----------------------------------------------------------------- hostile output

HOSTILE = [  # scored against the answer "5"
    "x" * 1_000_000,
    "pwned_5", "x5", "v1.2.5", "step_000005", "runs/5", "5th",  # a 5 that is no number
    "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "{" * 10_000, "\\boxed{" * 10_000, "$" * 40_000, "\\[" * 20_000, "final answer is " * 3_000,
    r"\boxed{__import__('os').system('touch /tmp/rlvr_pwned')}",
    r"The answer is __import__('os').system('touch /tmp/rlvr_pwned')",
    r"\boxed{2^{2^{2^{30}}}}",
    r"\boxed{9^{9^{9^{9^{9}}}}}",
    "The answer is 9**9**9**9",
    r"\boxed{10^{10^{10}}!}",
    r"\boxed{\int_0^{\infty} e^{x^{x^{x}}} dx}",
    "1 " * 200_000,
]


@pytest.mark.slow
def test_hostile_completions_return_fast_score_zero_and_execute_nothing():
    marker = Path("/tmp/rlvr_pwned")
    marker.unlink(missing_ok=True)
    config = VerifyConfig(timeout=2)
    for text in HOSTILE:
        start = time.monotonic()
        verdict = verify_here(text, "5", config)
        assert verdict.reward == 0.0, verdict
        assert time.monotonic() - start < 3 * config.timeout + 1, text[:40]
    with VerifierPool(2, config, in_process_seconds=0) as pool:  # every sympy item in a worker
        start = time.monotonic()
        verdicts = pool.map(HOSTILE, ["5"] * len(HOSTILE))
        assert pool.last_counts["sympy_here"] == 0 and pool.last_counts["sympy_workers"] >= 4
    assert [v.reward for v in verdicts] == [0.0] * len(HOSTILE)
    assert time.monotonic() - start < len(HOSTILE) * (3 * config.timeout + 1)
    assert not marker.exists()


# ----------------------------------------------------------------- one verdict in every process

HASH_SENSITIVE = [  # latex2sympy picks a symbol with next(iter(a set)): math-verify's verdict follows the hash seed
    (r"\boxed{x|_{x+y}}", "x"), (r"\boxed{x|_{x+y}}", "x+y"), (r"$x|_{x+y}$", "x"),
    (r"\boxed{\int_1^2 \frac{da\, db}{a}}", r"\ln 2"), (r"\boxed{\int_0^1 \frac{da\, db}{1}}", "b"),
]
PROBE = """
import json, sys
if sys.argv[1] == "numpy":
    import numpy
sys.path.insert(0, {root!r})
from rlvr_env.verifier import verify_here
from rlvr_env.verifier_pool import verify_batch
pairs = json.loads(sys.stdin.read())
print(json.dumps({{"batch": [v.reward for v in verify_batch([c for c, _ in pairs], [a for _, a in pairs], workers=1)],
                   "here": [verify_here(c, a).reward for c, a in pairs]}}))
"""


def run_probe(pairs, seed: str, numpy_first: bool) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT)), "numpy" if numpy_first else "plain"],
                         input=json.dumps(pairs), capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.slow
@settings(max_examples=3, deadline=None)
@given(st.lists(st.tuples(small, small, st.sampled_from(FORMS)), min_size=5, max_size=5))
def test_one_verdict_per_pair_in_fresh_processes_with_other_hash_seeds(ints):
    pairs = HASH_SENSITIVE + [(form.format(b if a != b else b + 1), str(a)) for a, b, form in ints]
    runs = [run_probe(pairs, seed, numpy_first) for seed, numpy_first in (("1", False), ("2", True), ("3", False))]
    assert runs[0]["batch"] == runs[1]["batch"] == runs[2]["batch"]
    assert runs[0]["batch"][len(HASH_SENSITIVE):] == [0.0] * len(ints)  # different integers: wrong in every form


@pytest.mark.slow
def test_the_hash_seed_does_decide_math_verify_on_those_pairs():
    """What the test above guards against: in-process, the verdict follows the hash seed."""
    seen = {tuple(run_probe(HASH_SENSITIVE[:1], str(seed), False)["here"]) for seed in range(6)}
    assert seen == {(0.0,), (1.0,)}
