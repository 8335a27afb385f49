"""The verifier: final-answer extraction and equivalence, safe on hostile model output.

    verify(completion, answer) -> Verdict(reward, extracted, reason)
    verify_batch(completions, answers) -> [Verdict]     (same verdicts, in input order)

Model output is untrusted input. It is parsed, never evaluated: extraction is a linear
scan and regular expressions; equivalence is math-verify (LaTeX -> sympy, which keeps
expressions symbolic). Only the last ``max_completion_chars`` characters are examined
(final answers come last), an extracted answer longer than ``max_answer_chars`` is
refused, and math-verify runs under its ``timeout`` (signal based: main thread only).

Verification is split per item into a cheap part (extraction, refusals, a string fast path
and an exact comparison of plain numbers: microseconds) and the sympy part (milliseconds).
``verify_batch`` does the cheap part in the calling process; the items that need sympy
are done there too until it has spent ``in_process_seconds`` on them, then where items
went faster lately: there or in worker processes, each item in a worker under a hard
deadline enforced by the parent (a worker stuck in C code is killed and replaced). Workers are fresh interpreters that load this file by path: they
never import the caller's ``__main__`` (a script without ``if __name__ == "__main__":``
works) nor torch (``verifier_pool.py``). An answer that cannot be parsed gets reward 0 and a
reason; no exception reaches the training loop. This file imports nothing from rlvr_env:
workers load it alone.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from multiprocessing.connection import Connection

import attrs

EXTRACTORS = ("boxed", "gsm8k", "answer_is", "last_number")


@attrs.frozen
class Verdict:
    reward: float
    """1.0 if the extracted answer is equivalent to the reference, else 0.0."""
    extracted: str | None
    """The final answer found in the completion (None: none found)."""
    reason: str
    """correct | wrong | no_answer | answer_too_long | timeout | error: ..."""


@attrs.frozen
class VerifyConfig:
    extractors: tuple[str, ...] = attrs.field(default=EXTRACTORS, converter=tuple)
    """Extraction methods, tried in order; the first that finds an answer wins."""
    timeout: int = 3
    """Whole seconds for each math-verify call (parse answer, parse reference, compare):
    math-verify times out with signal.alarm, which takes integers."""
    max_completion_chars: int = 20_000
    """Only the last this many characters of a completion are examined."""
    max_answer_chars: int = 500
    """Longer extracted answers are refused (reason answer_too_long)."""

    def __attrs_post_init__(self):
        unknown = set(self.extractors) - set(EXTRACTORS)
        if unknown or not self.extractors:
            raise ValueError(f"extractors must be a non-empty subset of {EXTRACTORS}, got {self.extractors}")
        if not isinstance(self.timeout, int) or isinstance(self.timeout, bool) or self.timeout < 1:
            raise ValueError(f"timeout must be a whole number of seconds >= 1, got {self.timeout!r}")
        if self.max_completion_chars < 1 or self.max_answer_chars < 1:
            raise ValueError("max_completion_chars and max_answer_chars must be positive")


# ----------------------------------------------------------------- extraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_GSM8K = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"(?i)(?:final answer|the answer)\s*(?:is|:)\s*:?\s*([^\n]+)")
# A number that stands alone: not glued to a letter, digit, underscore, dot or slash on
# either side (``x2``, ``pwned_3``, ``v1.2.3``, ``step_000200``, ``runs/200``, ``3rd`` hold
# none); a minus sign counts unless it follows such a character (``5-3`` -> 3). Thousands
# separators need groups of three (``1,000``); a trailing sentence period, ``%`` or a
# currency sign around the number is fine ("42.", "5%", "$1,000").
_NUMBER = re.compile(r"(?<![\w./])-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+|(?=\.[0-9]))(?:\.[0-9]+)?"
                     r"(?:\s*/\s*[0-9]+)?(?![\w/]|[.,][0-9])")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces balanced) or ``\\boxed x``."""
    for match in reversed(list(_BOXED.finditer(text))):
        start = match.end()
        if start < len(text) and text[start] == "{":
            depth = 0
            for i in range(start, len(text)):  # one linear scan, no recursion
                c = text[i]
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        return text[start + 1:i].strip()
            continue  # unbalanced: try an earlier \boxed
        bare = re.match(r"[^\s$]+", text[start:])
        if bare:
            return bare.group(0)
    return None


def _strip_sentence(s: str) -> str:
    """Drop sentence punctuation and math delimiters around an answer: "$12$." -> "12"."""
    return s.strip().rstrip(".").strip().strip("$").strip().rstrip(".").strip()


def extract_answer(text: str, extractors: Sequence[str] = EXTRACTORS) -> str | None:
    """The final answer of ``text`` by the first extractor that finds one.

    The last-number fallback applies only to text with no ``\\boxed`` and no ``####``: a
    completion that tried to mark its answer and malformed it has no answer.
    """
    marked = _BOXED.search(text) is not None or "####" in text
    for name in extractors:
        if name == "last_number" and marked:
            continue
        if name == "boxed":
            found = last_boxed(text)
        elif name == "gsm8k":
            hits = _GSM8K.findall(text)
            found = _strip_sentence(hits[-1]) if hits else None
        elif name == "answer_is":
            hits = _ANSWER_IS.findall(text)
            found = _strip_sentence(hits[-1]) if hits else None
            if found:
                found = last_boxed(found) or found
        else:
            hits = _NUMBER.findall(text)
            found = hits[-1].replace(",", "").replace(" ", "") if hits else None
        if found:
            return found
    return None


# ----------------------------------------------------------------- equivalence

_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def normalize(s: str) -> str:
    """Cheap canonical form for string equality (tried before sympy)."""
    s = _TEXT_WRAPPERS.sub(r"\1", s)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\ ", ""), ("dfrac", "frac"),
                     ("tfrac", "frac"), ("^\\circ", ""), ("^{\\circ}", ""), ("°", ""), ("$", ""),
                     ("\\%", ""), ("%", "")):  # MATH answers "what percent" questions without the sign
        s = s.replace(old, new)
    s = re.sub(r"\s+", "", s).rstrip(".")
    return s.lower()


_PLAIN_NUMBER = re.compile(r"-?(?:[0-9]{1,15}(?:\.[0-9]{1,6})?|\.[0-9]{1,6})")


def plain_number(s: str) -> Fraction | None:
    """The exact value of an integer or short decimal ("12", "-3.50", ".5"), else None.

    Up to 15 digits before the point and 6 after, where math-verify's comparison is exact
    (tests/test_verifier.py checks the two agree), so such pairs skip sympy.
    """
    s = s.strip()
    return Fraction(s) if _PLAIN_NUMBER.fullmatch(s) else None


def _parse(expr: str, timeout: int):
    from math_verify import parse

    return parse(f"\\boxed{{{expr}}}", parsing_timeout=timeout)


def sympy_equivalent(extracted: str, answer: str, timeout: int) -> bool:
    """math-verify's equivalence: fractions, decimals, LaTeX, sets, intervals, tuples, degrees."""
    from math_verify import verify as mv_verify

    gold, pred = _parse(answer, timeout), _parse(extracted, timeout)
    if not gold or not pred:
        return False
    return bool(mv_verify(gold, pred, timeout_seconds=timeout))


# ----------------------------------------------------------------- one item: cheap part, sympy part


def cheap_verdict(completion: str, answer: str, config: VerifyConfig, normal_answer: str | None = None) -> Verdict | str:
    """The final verdict when it needs no sympy, else the extracted answer (a str) for sympy.

    No sympy: not a string, no answer, an answer too long, equal after ``normalize``, or two
    plain numbers (compared exactly). ``normal_answer``: ``normalize(answer)`` if known.
    """
    if not isinstance(completion, str) or not isinstance(answer, str):
        return Verdict(0.0, None, f"error: completion and answer must be str, got {type(completion).__name__}")
    extracted = extract_answer(completion[-config.max_completion_chars:], config.extractors)
    if extracted is None:
        return Verdict(0.0, None, "no_answer")
    if len(extracted) > config.max_answer_chars:
        return Verdict(0.0, extracted[:80] + "...", "answer_too_long")
    if normalize(extracted) == (normalize(answer) if normal_answer is None else normal_answer):
        return Verdict(1.0, extracted, "correct")
    x, y = plain_number(extracted), plain_number(answer)
    if x is not None and y is not None:
        return Verdict(float(x == y), extracted, "correct" if x == y else "wrong")
    return extracted


def sympy_verdict(extracted: str, answer: str, timeout: int) -> Verdict:
    """The verdict of math-verify on an extracted answer (main thread of a process)."""
    start = time.monotonic()
    try:
        ok = sympy_equivalent(extracted, answer, timeout)
    except Exception as exc:  # a parser bug must not stop training
        return Verdict(0.0, extracted, f"error: {type(exc).__name__}: {str(exc)[:200]}")
    if ok:
        return Verdict(1.0, extracted, "correct")
    return Verdict(0.0, extracted, "timeout" if time.monotonic() - start >= timeout else "wrong")


def verify(completion: str, answer: str, config: VerifyConfig = VerifyConfig()) -> Verdict:
    """Score one completion against the reference answer (main thread: math-verify uses signals)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("verify() must run on a main thread (math-verify times out with signals); use verify_batch")
    verdict = cheap_verdict(completion, answer, config)
    return verdict if isinstance(verdict, Verdict) else sympy_verdict(verdict, answer, config.timeout)


def verify_batch(completions: Sequence[str], answers: Sequence[str], config: VerifyConfig = VerifyConfig(),
                 workers: int | None = None) -> list[Verdict]:
    """``verify`` for many items, results in input order, from any thread, also in a script
    without a main guard: ``rlvr_env.verifier_pool.VerifierPool`` (kept and reused)."""
    from rlvr_env.verifier_pool import shared_pool

    return shared_pool(workers, config).map(completions, answers)


# ----------------------------------------------------------------- worker side (see verifier_pool.py)


def _serve(read_fd: int, write_fd: int) -> None:
    """Worker loop: (extracted, answer, timeout) in, (reward, extracted, reason) out, until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which closes the pool
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    sympy_verdict("1/2", "0.5", 60)  # import and warm math-verify before saying "ready"
    outbox.send("ready")
    while True:
        try:
            extracted, answer, timeout = inbox.recv()
        except EOFError:
            return
        outbox.send(attrs.astuple(sympy_verdict(extracted, answer, timeout)))
