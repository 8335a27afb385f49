"""The verifier: final-answer extraction and equivalence, safe on hostile model output.

    verify(completion, answer) -> Verdict(reward, extracted, reason)
    verify_batch(completions, answers) -> [Verdict]     (worker processes, in order)

Model output is untrusted input. It is parsed, never evaluated: extraction is a linear
scan and regular expressions; equivalence is math-verify (LaTeX -> sympy, which keeps
expressions symbolic). Only the last ``max_completion_chars`` characters are examined
(final answers come last), an extracted answer longer than ``max_answer_chars`` is
refused, and math-verify runs under its ``timeout`` (signal based: main thread only).
``verify_batch`` adds a hard per-item deadline enforced by the parent process: a worker
stuck in C code is terminated and the pool restarted. An answer that cannot be parsed
gets reward 0 and a reason; no exception reaches the training loop.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import re
import threading
import time
from collections.abc import Sequence

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
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")


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


def _parse(expr: str, timeout: int):
    from math_verify import parse

    return parse(f"\\boxed{{{expr}}}", parsing_timeout=timeout)


def equivalent(extracted: str, answer: str, timeout: int) -> bool:
    """Mathematical equivalence by math-verify (fractions, decimals, LaTeX, sets, intervals,
    tuples, degrees, \\text{} wrappers), after a string fast path."""
    if normalize(extracted) == normalize(answer):
        return True
    from math_verify import verify as mv_verify

    gold, pred = _parse(answer, timeout), _parse(extracted, timeout)
    if not gold or not pred:
        return False
    return bool(mv_verify(gold, pred, timeout_seconds=timeout))


def verify(completion: str, answer: str, config: VerifyConfig = VerifyConfig()) -> Verdict:
    """Score one completion against the reference answer (main thread: math-verify uses signals)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("verify() must run on a main thread (math-verify times out with signals); use verify_batch")
    if not isinstance(completion, str) or not isinstance(answer, str):
        return Verdict(0.0, None, f"error: completion and answer must be str, got {type(completion).__name__}")
    extracted = extract_answer(completion[-config.max_completion_chars:], config.extractors)
    if extracted is None:
        return Verdict(0.0, None, "no_answer")
    if len(extracted) > config.max_answer_chars:
        return Verdict(0.0, extracted[:80] + "...", "answer_too_long")
    start = time.monotonic()
    try:
        ok = equivalent(extracted, answer, config.timeout)
    except Exception as exc:  # a parser bug must not stop training
        return Verdict(0.0, extracted, f"error: {type(exc).__name__}: {str(exc)[:200]}")
    if ok:
        return Verdict(1.0, extracted, "correct")
    timed_out = time.monotonic() - start >= config.timeout
    return Verdict(0.0, extracted, "timeout" if timed_out else "wrong")


# ----------------------------------------------------------------- worker processes


def _verify_chunk(items: list[tuple[str, str]], config: VerifyConfig) -> list[Verdict]:
    return [verify(c, a, config) for c, a in items]


class VerifierPool:
    """Verifies in worker processes (each its own main thread), in order, reusing the pool.

    Items go to the workers in chunks of up to 16. A chunk of n items gets a hard deadline
    of n * (3 * timeout + grace) seconds once its turn comes; past it its first item is
    scored ``timeout``, the pool is terminated and restarted, and the items after that one
    are submitted again.
    """

    def __init__(self, workers: int | None = None, config: VerifyConfig = VerifyConfig(), grace: float = 5.0):
        self.workers = workers or max(1, mp.cpu_count())
        self.config = config
        self.deadline = 3 * config.timeout + grace
        self._pool = None

    def _ensure(self):
        if self._pool is None:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["rlvr_env.verifier", "math_verify"])
            self._pool = ctx.Pool(self.workers)
        return self._pool

    def map(self, completions: Sequence[str], answers: Sequence[str]) -> list[Verdict]:
        if len(completions) != len(answers):
            raise ValueError(f"{len(completions)} completions but {len(answers)} answers")
        results: list[Verdict | None] = [None] * len(completions)
        next_item = 0
        while next_item < len(completions):
            pool = self._ensure()
            size = max(1, min(16, (len(completions) - next_item) // (4 * self.workers)))
            starts = range(next_item, len(completions), size)
            jobs = [(s, pool.apply_async(_verify_chunk, ([(completions[i], answers[i]) for i in range(s, min(s + size, len(completions)))], self.config)))
                    for s in starts]
            for s, job in jobs:
                try:
                    verdicts = job.get(timeout=self.deadline * size)
                except mp.TimeoutError:
                    results[s] = Verdict(0.0, None, "timeout")  # the chunk's first unfinished item is blamed
                    self.close()  # a worker may be stuck in C code: kill them all, restart
                    next_item = s + 1
                    break
                results[s:s + len(verdicts)] = verdicts
            else:
                next_item = len(completions)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_POOLS: dict[tuple, VerifierPool] = {}


@atexit.register
def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.close()


def verify_batch(completions: Sequence[str], answers: Sequence[str], config: VerifyConfig = VerifyConfig(),
                 workers: int | None = None) -> list[Verdict]:
    """``verify`` for many items in worker processes, results in input order; the pool is reused."""
    key = (workers, config)
    if key not in _POOLS:
        _POOLS[key] = VerifierPool(workers, config)
    return _POOLS[key].map(completions, answers)
