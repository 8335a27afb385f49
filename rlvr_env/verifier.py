"""The verifier: math-verify's extraction and equivalence, safe on hostile model output.

    verify_here(completion, answer) -> Verdict(reward, extracted, reason)   (in this process)
    rlvr_env.verify / verify_batch (verifier_pool.py): the same verdicts, one per pair in every process

The reward is math-verify's: ``parse`` (LaTeX and expression targets) reads the reference and
the completion, ``verify`` compares them. Around it, on purpose (README, "The verifier"):

* stricter where math-verify pays for what is no answer: a number glued to a letter, digit,
  underscore or decimal point on its right (``3rd``, ``5th``, ``1.2.3``) is none; case counts
  (``X^2`` is not ``x^2``, ``\\Gamma`` not ``\\gamma``) unless the reference is a word or a
  choice letter; an empty reference matches nothing;
* a cheap path that needs no sympy and decides only where it gives math-verify's verdict: no
  digit nor LaTeX at all (no answer), or a sole ``\\boxed{X}`` that math-verify's extraction
  takes, with X identical to the reference or both plain numbers (compared exactly);
* safety: model output is parsed, never evaluated; only the last ``max_completion_chars``
  characters of a completion (and of a reference) are read, before any scan; every scan of
  the cheap path is linear; math-verify runs under its ``timeout`` (signals: a main thread)
  and, in worker processes, under a hard deadline from the parent (``verifier_pool.py``).

One pair gets one verdict in every process. math-verify's verdict can depend on the string
hash seed: latex2sympy picks "the" symbol of a set with ``next(iter(...))`` (``x|_{x+y}``
substitutes x or y; ``\\int \\frac{da\\,db}{a}`` integrates over a or b). Workers run with
``PYTHONHASHSEED=0`` and the same imports, and ``verify_batch`` verifies with sympy in the
calling process only where its hash seed is that one too (``hash_pinned()``).

Workers load this file by path, alone: it imports nothing from rlvr_env (nor torch).
"""

from __future__ import annotations

import functools
import re
import signal
import sys
import threading
import time
from collections import Counter
from fractions import Fraction
from multiprocessing.connection import Connection

import attrs

MAX_CHARS = 20_000
"""Default bound on the characters of a completion or reference that are read."""
WORKER_HASH_SEED = "0"
"""PYTHONHASHSEED of the worker processes; a caller with the same seed verifies in-process too."""


def hash_pinned() -> bool:
    """Whether this process hashes strings as the workers do (started with PYTHONHASHSEED=0)."""
    return sys.flags.hash_randomization == 0


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
    timeout: int = 3
    """Whole seconds for each math-verify call (parse reference, parse answer, compare):
    math-verify times out with signal.alarm, which takes integers."""
    max_completion_chars: int = MAX_CHARS
    """Only the last this many characters of a completion (and of a reference) are read."""
    max_answer_chars: int = 500
    """Longer extracted answers are refused (reason answer_too_long)."""

    def __attrs_post_init__(self):
        if not isinstance(self.timeout, int) or isinstance(self.timeout, bool) or self.timeout < 1:
            raise ValueError(f"timeout must be a whole number of seconds >= 1, got {self.timeout!r}")
        if self.max_completion_chars < 1 or self.max_answer_chars < 1:
            raise ValueError("max_completion_chars and max_answer_chars must be positive")


# ----------------------------------------------------------------- the reference

_EMPTY_MARKUP = re.compile(r"\\boxed|\\\[|\\\]|\\\(|\\\)|[\s${}.,]")
_DELIMITED = re.compile(r"\$\$(.+)\$\$|\$([^$]+)\$|\\\[(.+)\\\]|\\\((.+)\\\)", re.DOTALL)
_GROUPED = re.compile(r"-?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox)\s*\{([^{}]*)\}")
_WORD = re.compile(r"\(?([A-Za-z]+(?:[ '\-][A-Za-z]+)*)\)?\.?")


@attrs.frozen
class Reference:
    """A reference answer as the verifier reads it (made once per distinct answer)."""

    text: str | None
    """What math-verify parses (None: the reference is empty and matches nothing)."""
    bare: str | None
    """The answer itself where the reference is one (not a solution): for exact equality."""
    number: Fraction | None
    """Its exact value where it is a plain number."""
    fold_case: bool
    """A word or a choice letter: case does not count."""


def final_part(text: str, max_chars: int = MAX_CHARS) -> str:
    """What the verifier reads of a completion or reference: its last ``max_chars`` characters,
    and of those what follows the last ``####`` (GSM8K's final-answer mark) where there is one."""
    text = text[-max_chars:]
    return text.rsplit("####", 1)[1] if "####" in text else text


def reference(answer: str, max_chars: int = MAX_CHARS) -> Reference:
    """``answer`` (a bare answer, ``$...$`` / ``$$...$$`` / ``\\[...\\]`` / ``\\(...\\)``, a
    solution with a ``\\boxed`` answer, or GSM8K's ``... #### N``) as the verifier reads it."""
    s = final_part(answer, max_chars).strip()
    if not _EMPTY_MARKUP.sub("", s):
        return Reference(None, None, None, False)
    if "\\boxed" in s:  # a whole solution: math-verify finds its answer
        return Reference(s, None, None, False)
    match = _DELIMITED.fullmatch(s[:-1] if s.endswith(".") else s)  # "$x$." is "$x$"
    bare = next(g for g in match.groups() if g is not None).strip() if match else s
    if _GROUPED.fullmatch(bare):
        bare = bare.replace(",", "")
    # math-verify reads a bare answer in inline math; one with "$" or a line break inside as a box
    text = match.group(0) if match else (f"\\boxed{{{bare}}}" if "$" in bare or "\n" in bare else f"${bare}$")
    word = _WORD.fullmatch(_WRAPPERS.sub(r"\1", bare).strip())
    fold = bool(word) and (len(word.group(1)) > 1 or word.group(1).upper() in "ABCDE")
    return Reference(text, bare, plain_number(bare), fold)


# ----------------------------------------------------------------- the cheap path (no sympy)

_PLAIN_NUMBER = re.compile(r"-?(?:[0-9]{1,15}(?:\.[0-9]{1,6})?|\.[0-9]{1,6})")
_MAYBE_ANSWER = re.compile(r"[\d$\\\[]")  # what any of math-verify's patterns needs
_FINAL_ANSWER = re.compile(r"(?i)final answer")
_BEFORE_BOX = re.compile(r"\s*(?:\*\*)?\s*(?:is\b|:)?\s*:?\s*(?:\$\$|\$|\\\[|\\\()?\s*")
_PERCENT_AFTER = re.compile(r"\s*(?:\$\$|\$|\\\]|\\\))?\s*(?:\\?%|[Pp]ercent|[Pp]ct)")


def plain_number(s: str) -> Fraction | None:
    """The exact value of an integer or short decimal ("12", "-3.50", ".5"), else None.

    Up to 15 digits before the point and 6 after, where math-verify's comparison is exact
    (tests/test_verifier.py checks the two agree), so such pairs skip sympy.
    """
    s = s.strip()
    return Fraction(s) if _PLAIN_NUMBER.fullmatch(s) else None


def sole_box(text: str) -> tuple[int, int, str] | None:
    """(start, end, content) of the only ``\\boxed{...}`` of ``text`` (balanced braces, one
    linear scan), or None: no box, several, a ``\\fbox``, unbalanced."""
    if text.count("\\boxed") != 1 or "\\fbox" in text:
        return None
    start = text.index("\\boxed")
    i = start + len("\\boxed")
    while i < len(text) and text[i].isspace():
        i += 1
    if i == len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return start, j + 1, text[i + 1:j].strip()
    return None


def box_is_the_answer(text: str, start: int, end: int) -> bool:
    """Whether math-verify's extraction takes the box at ``text[start:end]``: its boxed patterns
    outrank all but "final answer is ..." ones, so at most one "final answer" and right before
    the box ("Final Answer: \\boxed", "final answer is $\\boxed"), and no percent sign after it."""
    phrases = list(_FINAL_ANSWER.finditer(text))
    if len(phrases) > 1 or (phrases and not _BEFORE_BOX.fullmatch(text, phrases[0].end(), start)):
        return False
    return not _PERCENT_AFTER.match(text, end)


def cheap_verdict(completion: str, ref: Reference, config: VerifyConfig) -> Verdict | None:
    """The verdict where it needs no sympy (see the module doc), else None."""
    if not isinstance(completion, str):
        return Verdict(0.0, None, f"error: completion must be str, got {type(completion).__name__}")
    if ref.text is None:
        return Verdict(0.0, None, "error: empty reference")
    text = final_part(completion, config.max_completion_chars)
    if not _MAYBE_ANSWER.search(text):
        return Verdict(0.0, None, "no_answer")
    box = sole_box(text)
    if box is None or not box_is_the_answer(text, box[0], box[1]):
        return None
    content = box[2]
    if len(content) > config.max_answer_chars:
        return Verdict(0.0, content[:80] + "...", "answer_too_long")
    if ref.bare is not None and "".join(content.split()) == "".join(ref.bare.split()):
        return Verdict(1.0, content, "correct")
    x = plain_number(content)
    if x is not None and ref.number is not None:
        return Verdict(float(x == ref.number), content, "correct" if x == ref.number else "wrong")
    return None


# ----------------------------------------------------------------- math-verify (sympy)

_PERCENT_GROUP = r"(?P<percent>\s*(?:%|[Pp]ercent|\s*[Pp]ercentage|\s*[Pp]ct))?"
_GLUED = r"(?!\w|[.,]\d)"  # nothing glued on the right: "3rd", "5th", "1.2.3" are no numbers


@functools.cache
def completion_targets() -> list:
    """math-verify's default targets (LaTeX, expressions), each number pattern also needing
    nothing glued on its right. Raises if math-verify's number pattern is not the one known."""
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig, get_extraction_regexes

    targets = []
    for patterns, target in get_extraction_regexes([LatexExtractionConfig(), ExprExtractionConfig()]):
        if isinstance(target, ExprExtractionConfig):
            numbers = [p.pattern for p, _ in patterns if "(?P<integer3>" in p.pattern]
            if not numbers or not all(_PERCENT_GROUP in p for p in numbers):
                raise RuntimeError("math-verify's number pattern changed: update rlvr_env/verifier.py")
            patterns = [(re.compile(p.pattern.replace(_PERCENT_GROUP, _PERCENT_GROUP + _GLUED), p.flags), priority)
                        for p, priority in patterns]
        targets.append((patterns, target))
    return targets


def parse_completion(text: str, timeout: int) -> list:
    """math-verify's ``parse(text)`` (the same call) with ``completion_targets``: [] where
    nothing is found or parsing fails; math-verify's TimeoutException past ``timeout`` s."""
    from math_verify.parser import extract_target_from_pred
    from math_verify.utils import timeout as with_timeout

    targets = completion_targets()  # outside the try: a changed math-verify must fail loudly
    try:
        return with_timeout(timeout_seconds=timeout)(extract_target_from_pred)(
            text, targets, fallback_mode="first_match", extraction_mode="any_match")
    except Exception:  # as math-verify's parse does
        return []


_GOLD: dict[tuple[str, int], list] = {}


def parse_reference(text: str, timeout: int) -> list:
    """math-verify's ``parse`` of a reference, kept (a group's completions share one)."""
    from math_verify import parse

    key = (text, timeout)
    if key in _GOLD:
        return _GOLD[key]
    gold = parse(text, parsing_timeout=timeout)
    if gold:  # not a timeout
        if len(_GOLD) >= 4096:
            _GOLD.clear()
        _GOLD[key] = gold
    return gold


_GREEK = {"gamma", "delta", "theta", "lambda", "xi", "pi", "sigma", "upsilon", "phi", "psi", "omega"}
_LETTER = re.compile(r"\\([A-Za-z]+)|([A-Za-z])")


def case_letters(latex: str) -> Counter:
    """The letters of ``latex`` whose case could differ: Latin letters outside command names and
    text blocks, and Greek letters with a capital form (``\\Gamma``, ``\\gamma``)."""
    letters = Counter()
    for command, letter in _LETTER.findall(_WRAPPERS.sub(" ", latex)):
        if letter or command.lower() in _GREEK:
            letters[letter or command] += 1
    return letters


def differ_in_case_only(a: str, b: str) -> bool:
    """``X^2`` and ``x^2``: the same letters up to case, and not the same letters."""
    la, lb = case_letters(a), case_letters(b)
    return la != lb and Counter(k.lower() for k in la.elements()) == Counter(k.lower() for k in lb.elements())


def _as_text(parsed: list, default: str) -> str:
    return next((p for p in reversed(parsed) if isinstance(p, str)), default)


def sympy_verdict(completion: str, ref: Reference, config: VerifyConfig) -> Verdict:
    """math-verify's verdict with our refusals (main thread of a process: signal timeouts)."""
    from math_verify import verify as mv_verify
    from math_verify.errors import TimeoutException

    completion_targets()  # a changed math-verify raises here, never as a verdict
    start = time.monotonic()
    timed_out = lambda: time.monotonic() - start >= config.timeout  # noqa: E731  (math-verify logs and returns [] / False)
    try:
        gold = parse_reference(ref.text, config.timeout)
        pred = parse_completion(final_part(completion, config.max_completion_chars), config.timeout)
        if pred and all(isinstance(p, str) for p in pred):  # unparsed, e.g. \boxed{10\%}: read again as inline math
            pred = [p for p in parse_completion(f"${pred[-1]}$", config.timeout) if not isinstance(p, str)] + pred
        if not pred or not gold:
            reason = "timeout" if timed_out() else "no_answer" if not pred else "error: no answer found in the reference"
            return Verdict(0.0, _as_text(pred, str(pred[0])) if pred else None, reason)
        extracted = _as_text(pred, str(pred[0]))
        if len(extracted) > config.max_answer_chars:
            return Verdict(0.0, extracted[:80] + "...", "answer_too_long")
        ok = mv_verify(gold, pred, timeout_seconds=config.timeout)
    except TimeoutException:
        return Verdict(0.0, None, "timeout")
    except Exception as exc:  # a parser bug must not stop training
        return Verdict(0.0, None, f"error: {type(exc).__name__}: {str(exc)[:200]}")
    if ok and not ref.fold_case and differ_in_case_only(_as_text(gold, ref.bare or ""), extracted):
        return Verdict(0.0, extracted, "wrong")
    if ok:
        return Verdict(1.0, extracted, "correct")
    return Verdict(0.0, extracted, "timeout" if timed_out() else "wrong")


# ----------------------------------------------------------------- one item, many items


def verify_here(completion: str, answer: str, config: VerifyConfig = VerifyConfig()) -> Verdict:
    """The verdict, computed in this process (main thread: math-verify times out with
    signals): what a worker computes. Its hash seed may differ from the workers'
    (``hash_pinned``); ``verify`` / ``verify_batch`` give one verdict everywhere."""
    if not isinstance(answer, str):
        return Verdict(0.0, None, f"error: answer must be str, got {type(answer).__name__}")
    ref = reference(answer, config.max_completion_chars)
    verdict = cheap_verdict(completion, ref, config)
    return verdict if verdict is not None else sympy_verdict(completion, ref, config)


def extract_answer(text: str, timeout: int = 3) -> str | None:
    """The final answer the verifier reads in ``text`` (None: none), for display and votes: the
    sole box where it is the answer, else math-verify's extraction in this process within
    ``timeout`` seconds (on a main thread; elsewhere, where signals cannot bound it, None)."""
    from math_verify.errors import TimeoutException

    text = final_part(text)
    box = sole_box(text)
    if box is not None and box_is_the_answer(text, box[0], box[1]):
        return box[2]
    if not _MAYBE_ANSWER.search(text) or threading.current_thread() is not threading.main_thread():
        return None
    try:
        pred = parse_completion(text, timeout)
    except TimeoutException:
        return None
    return _as_text(pred, str(pred[0])) if pred else None


def normalize(answer: str) -> str:
    """A canonical spelling for counting votes (maj@k): no spaces, delimiters, sizing commands."""
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\ ", ""), ("dfrac", "frac"),
                     ("tfrac", "frac"), ("$", "")):
        answer = answer.replace(old, new)
    return re.sub(r"\s+", "", answer).rstrip(".")


# ----------------------------------------------------------------- worker side (see verifier_pool.py)


def _serve(read_fd: int, write_fd: int) -> None:
    """Worker loop: (completion, answer, config fields) in, (reward, extracted, reason) out, until EOF."""
    import numpy  # noqa: F401  (the calling process has it: the same imports on both sides)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which closes the pool
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    verify_here(r"\boxed{\frac{1}{2}}", "0.5")  # import and warm math-verify before saying "ready"
    outbox.send("ready")
    while True:
        try:
            completion, answer, fields = inbox.recv()
        except EOFError:
            return
        outbox.send(attrs.astuple(verify_here(completion, answer, VerifyConfig(*fields))))
