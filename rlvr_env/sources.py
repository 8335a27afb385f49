"""Problem files: one reader for JSONL, Parquet and Hugging Face ``datasets`` folders, one validation.

    load_problems(path, columns=None, limit=None) -> list[Problem]     read, validate, drop exact duplicates
    read_rows(path, max_row_bytes) -> iterator of (number, location, row)
    check_columns(value) -> dict | None                                 env.columns, validated
    fit_context(problems, template, policy, max_prompt_tokens, what) -> list[Problem]

What ``path`` names, by its suffix or contents:
    FILE.parquet / FILE.pq   a Parquet file (pyarrow); rows are located as ``FILE[row N]`` (N from 0, as ``df.iloc[N]``)
    FOLDER                   a ``datasets.Dataset`` written with ``save_to_disk`` (``datasets.load_from_disk``;
                             a ``DatasetDict`` folder: name one split's subfolder); located as ``FOLDER[row N]``
    any other file           JSONL, one JSON object per line; located as ``FILE:LINE``

Rows are read by ``env.columns`` (our names -> the file's columns: prompt and answer, optionally
level and id) where it is given, else by the first of ``ROW_FORMATS`` whose keys a row has.
Columns not mapped go to ``Problem.metadata`` as they are (JSON types).

Validation, the same for every source (training files, held-out files, evaluated benchmarks):
    a row over ``max_row_bytes`` bytes, checked before it is parsed (JSONL: on the raw line)
    bytes that are not UTF-8: ``FILE:LINE: not UTF-8 (byte 0xe9 at column 15)`` (column in characters, from 1)
    an empty prompt; an empty answer: null, NaN, blank, or markup around nothing (``$$``, ``\\boxed{}``,
        ``#### ``: the verifier's empty reference, which matches nothing)
    an answer over ``max_answer_chars`` characters (default 500: the verifier refuses longer extracted
        answers, so a longer reference could never be matched)
    the same problem twice with different answers: an error naming both locations
    the same problem twice with the same answer (an exact duplicate): the later row is dropped,
        with a count on stderr
"The same problem" is the prompt with runs of whitespace collapsed to one space and the ends
stripped; case is kept (case is meaning in mathematics: ``X^2`` is not ``x^2``). Answers are
compared the same way.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs

from algorithms.registry import ConfigError, FieldError
from rlvr_env.problems import ROW_FORMATS, Problem, ProblemFormatError, format_prompt
from rlvr_env.verifier import _EMPTY_MARKUP, final_part

PROBLEM_COLUMNS = ("prompt", "answer", "level", "id")
"""Our names that ``env.columns`` maps to a file's columns (prompt and answer required)."""
MAX_ANSWER_CHARS = 500
"""Default bound on a reference answer's length (the verifier's ``max_answer_chars``)."""
MAX_ROW_BYTES = 1_000_000
"""Default bound on one row's size in bytes, checked before it is parsed."""
PARQUET_SUFFIXES = (".parquet", ".pq")
BATCH_ROWS = 1024
BOM = b"\xef\xbb\xbf"


def check_columns(value) -> dict[str, str] | None:
    """``env.columns`` as a plain dict (None: the rows' own formats); a FieldError naming what is wrong."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise FieldError("columns", f"must be a mapping such as {{prompt: q, answer: final}}, got {value!r}")
    columns = dict(value)
    unknown = sorted(set(columns) - set(PROBLEM_COLUMNS))
    if unknown:
        raise FieldError("columns", f"unknown key(s) {unknown}; the keys are our names {list(PROBLEM_COLUMNS)}, "
                                    "the values the file's column names")
    missing = [k for k in ("prompt", "answer") if k not in columns]
    if missing:
        raise FieldError("columns", f"missing {' and '.join(missing)}: map at least prompt and answer, "
                                    "e.g. env.columns={prompt: q, answer: final}")
    bad = {k: v for k, v in columns.items() if not isinstance(v, str) or not v}
    if bad:
        raise FieldError("columns", f"column names must be non-empty strings, got {bad}")
    if len(set(columns.values())) < len(columns):
        raise FieldError("columns", f"two of our names map to the same column: {columns}")
    return columns


# ----------------------------------------------------------------- reading rows


def read_rows(path: Path, max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[tuple[int, str, dict]]:
    """(number, location, row) for each row of ``path`` (see the module doc for what it may name)."""
    if path.is_dir():
        yield from _dataset_rows(path, max_row_bytes)
    elif path.suffix.lower() in PARQUET_SUFFIXES:
        yield from _parquet_rows(path, max_row_bytes)
    else:
        yield from _jsonl_rows(path, max_row_bytes)


def _jsonl_rows(path: Path, max_row_bytes: int) -> Iterator[tuple[int, str, dict]]:
    with open(path, "rb") as f:
        line_no = 0
        while True:
            raw = f.readline(max_row_bytes + 2)  # never more than the bound (and its line break) in memory
            if not raw:
                return
            line_no += 1
            where = f"{path}:{line_no}"
            body = raw.rstrip(b"\r\n")
            if len(body) > max_row_bytes:
                raise ProblemFormatError(f"{where}: a row of more than {max_row_bytes:,} bytes (env.max_row_bytes); "
                                         "raise it if such rows are meant")
            if line_no == 1 and body.startswith(BOM):
                body = body[len(BOM):]
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = len(body[:exc.start].decode("utf-8")) + 1
                raise ProblemFormatError(f"{where}: not UTF-8 (byte 0x{body[exc.start]:02x} at column {column})") from None
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ProblemFormatError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            yield line_no, where, row


def _row_bytes(batch):
    """Bytes of each row's text and binary values (pyarrow, before any value becomes Python)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = None
    for column in batch.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or \
                pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            size = pc.fill_null(pc.binary_length(column), 0)
            total = size if total is None else pc.add(total, size)
    return None if total is None else total.to_pylist()


def _arrow_rows(batches, source: Path, max_row_bytes: int) -> Iterator[tuple[int, str, dict]]:
    start = 0
    for batch in batches:
        sizes = _row_bytes(batch)
        rows = None
        for i in range(batch.num_rows):
            where = f"{source}[row {start + i}]"
            if sizes is not None and sizes[i] > max_row_bytes:
                raise ProblemFormatError(f"{where}: a row of {sizes[i]:,} bytes, over env.max_row_bytes "
                                         f"({max_row_bytes:,}); raise it if such rows are meant")
            if rows is None:
                rows = batch.to_pylist()
            yield start + i, where, rows[i]
        start += batch.num_rows


def _parquet_rows(path: Path, max_row_bytes: int) -> Iterator[tuple[int, str, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{path}: reading Parquet needs pyarrow (pip install -e '.[llm]')") from None
    try:
        file = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow's ArrowInvalid and friends: not a Parquet file
        raise ProblemFormatError(f"{path}: not a Parquet file ({exc})") from None
    yield from _arrow_rows(file.iter_batches(batch_size=BATCH_ROWS), path, max_row_bytes)


def _dataset_rows(path: Path, max_row_bytes: int) -> Iterator[tuple[int, str, dict]]:
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        except (ValueError, AttributeError):
            splits = []
        raise ProblemFormatError(f"{path}: a DatasetDict (splits {', '.join(map(str, splits)) or '?'}); name one "
                                 f"split's folder, e.g. env.path={path / (splits[0] if splits else 'train')}")
    if not (path / "state.json").is_file():
        raise ProblemFormatError(f"{path}: a folder, but not a dataset written by Dataset.save_to_disk (no "
                                 "state.json); give a .jsonl or .parquet file, or such a folder")
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"{path}: reading a datasets folder needs the datasets package (pip install -e '.[llm]')") from None
    try:
        data = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise ProblemFormatError(f"{path}: an incomplete datasets folder ({exc})") from None
    yield from _arrow_rows(data.with_format("arrow").iter(batch_size=BATCH_ROWS), path, max_row_bytes)


# ----------------------------------------------------------------- rows -> problems


def _mapped_row(row: dict, pid: str, columns: dict[str, str]) -> Problem:
    absent = [f"{theirs!r} (env.columns.{ours})" for ours, theirs in columns.items() if theirs not in row]
    if absent:
        raise KeyError(f"no column {', '.join(absent)}; the row has {sorted(row)}")
    prompt, answer = row[columns["prompt"]], row[columns["answer"]]
    if not isinstance(prompt, str):
        raise KeyError(f"the prompt (column {columns['prompt']!r}) must be a string, got {type(prompt).__name__}")
    if answer is not None and (isinstance(answer, bool) or not isinstance(answer, (str, int, float))):
        raise KeyError(f"the answer (column {columns['answer']!r}) must be a string or number, "
                       f"got {type(answer).__name__}")
    level = row[columns["level"]] if "level" in columns else None
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 5):
        raise KeyError(f"level (column {columns['level']!r}) must be an integer 1-5 or null, got {level!r}")
    if "id" in columns:
        pid = row[columns["id"]]
        if isinstance(pid, bool) or not isinstance(pid, (str, int)) or not str(pid).strip():
            raise KeyError(f"id (column {columns['id']!r}) must be a non-empty string or an integer, got {pid!r}")
    metadata = {k: v for k, v in row.items() if k not in columns.values()}
    return Problem(str(pid), prompt, answer, level, metadata)


def problem_of(row, source: str, number: int, columns: dict[str, str] | None) -> Problem:
    """One row -> ``Problem`` (the answer as written: checked by ``check_problem``); KeyError with the reason."""
    if not isinstance(row, dict):
        raise KeyError(f"expected a JSON object, got {type(row).__name__}")
    pid = f"{source}-{number}"
    if columns is not None:
        return _mapped_row(row, pid, columns)
    for fmt in ROW_FORMATS.values():
        if all(k in row for k in fmt.keys):
            return fmt.read(row, pid)
    accepted = "; ".join(f"{' + '.join(f.keys)} ({f.doc})" for f in ROW_FORMATS.values())
    raise KeyError(f"keys {sorted(row)}; a row needs {accepted}; or map your columns: "
                   "env.columns={prompt: COLUMN, answer: COLUMN} (level, id optional)")


def problem_from_row(row: dict, source: str, line: int) -> Problem:
    """One JSON object in any recognised format (``ROW_FORMATS``) -> ``Problem``."""
    return problem_of(row, source, line, None)


def normalised(text: str) -> str:
    """The text compared for duplicates: whitespace runs collapsed to one space, ends stripped, case kept."""
    return " ".join(text.split())


def empty_reference(answer: str) -> bool:
    """The verifier's empty reference (``rlvr_env.verifier.reference``: blank, ``$$``, ``\\boxed{}``,
    ``#### ``), which matches nothing."""
    return not _EMPTY_MARKUP.sub("", final_part(answer).strip())


def check_problem(problem: Problem, location: str, max_answer_chars: int) -> Problem:
    """The problem at ``location`` with its answer as a string; KeyError where prompt or answer is
    empty or too long."""
    answer = problem.answer
    if answer is None:
        raise KeyError("empty answer (null)")
    if isinstance(answer, float) and not math.isfinite(answer) or isinstance(answer, str) and answer.strip().lower() == "nan":
        raise KeyError(f"the answer is {answer!r}, not a reference (a missing value?)")
    answer = str(answer)
    if empty_reference(answer):
        raise KeyError(f"empty answer {answer!r} (blank or markup around nothing: a reference that matches nothing)")
    if len(answer) > max_answer_chars:
        raise KeyError(f"an answer of {len(answer):,} characters, over env.max_answer_chars ({max_answer_chars}); "
                       "the verifier refuses longer extracted answers, so it could never be matched")
    if not problem.prompt.strip():
        raise KeyError("empty problem text")
    return attrs.evolve(problem, answer=answer, location=location)


class Deduplicator:
    """Problems seen so far by normalised text: a repeat with another answer is an error naming
    both locations; one with the same answer is counted and dropped."""

    def __init__(self):
        self.seen: dict[str, Problem] = {}
        self.ids: dict[str, Problem] = {}
        self.dropped: list[Problem] = []

    def keep(self, p: Problem) -> bool:
        key = normalised(p.prompt)
        first = self.seen.get(key)
        if first is not None:
            if normalised(first.answer) != normalised(p.answer):
                raise ProblemFormatError(f"{p.location}: the same problem as {first.location} with another answer "
                                         f"({p.answer!r} against {first.answer!r}); keep one of the rows or fix the "
                                         "answer")
            self.dropped.append(p)
            return False
        other = self.ids.get(p.id)
        if other is not None:
            raise ProblemFormatError(f"{p.location}: id {p.id!r} is also the id of {other.location} (env.columns.id)")
        self.seen[key] = self.ids[p.id] = p
        return True


def say(message: str) -> None:
    """A note on stderr, from the main process only (every process loads the same files)."""
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr)


def load_problems(path: str | Path, columns: Mapping | None = None, limit: int | None = None, *,
                  max_answer_chars: int = MAX_ANSWER_CHARS, max_row_bytes: int = MAX_ROW_BYTES) -> list[Problem]:
    """The problems of ``path`` (JSONL, Parquet or a datasets folder), validated (module doc);
    exact duplicates dropped with a count on stderr; at most ``limit`` of them."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such problem file: {path}")
    columns = check_columns(columns)
    source = path.name if path.is_dir() else path.stem
    problems, dedup = [], Deduplicator()
    for number, where, row in read_rows(path, max_row_bytes):
        try:
            p = check_problem(problem_of(row, source, number, columns), where, max_answer_chars)
        except KeyError as exc:
            raise ProblemFormatError(f"{where}: not a recognised problem row: {exc.args[0]}") from None
        if dedup.keep(p):
            problems.append(p)
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise ProblemFormatError(f"{path}: no problems")
    if dedup.dropped:
        first = dedup.dropped[0]
        say(f"{path}: dropped {len(dedup.dropped)} exact duplicate row(s) (the same problem text up to whitespace, "
            f"the same answer), the first at {first.location} (a repeat of {dedup.seen[normalised(first.prompt)].location})")
    return problems


def load_jsonl(path: str | Path, limit: int | None = None) -> list[Problem]:
    """Problems of a file in the known formats (``ROW_FORMATS``), checked, without exact duplicates."""
    return load_problems(path, limit=limit)


def without(train: list[Problem], heldout: list[Problem], what: str) -> list[Problem]:
    """``train`` less the problems that are also in ``heldout`` (dropped with a count on stderr);
    the same problem with another answer is an error naming both locations."""
    held = {normalised(p.prompt): p for p in heldout}
    kept = []
    for p in train:
        h = held.get(normalised(p.prompt))
        if h is None:
            kept.append(p)
        elif normalised(h.answer) != normalised(p.answer):
            raise ProblemFormatError(f"{p.location}: the same problem as {h.location} with another answer "
                                     f"({p.answer!r} against {h.answer!r})")
    if len(kept) < len(train):
        say(f"{what}: dropped {len(train) - len(kept)} training problem(s) that are also held out")
    return kept


# ----------------------------------------------------------------- the model's context


def fit_context(problems: list[Problem], template: str, policy, max_prompt_tokens, what: str) -> list[Problem]:
    """The problems whose prompts fit the policy's context (``policy.context_length``) with its
    generation budget: the others refused (``max_prompt_tokens`` None, naming the first and how
    many), or dropped with a count (``filter``: what fits the context; N: prompts of at most N
    tokens). A policy without a context (the tabular one) keeps them all."""
    context = getattr(policy, "context_length", None)
    if context is None or not problems:
        return problems
    budget = policy.max_new_tokens
    room = context - budget
    if room < 1:
        raise ConfigError(f"policy.max_new_tokens: {budget} leaves no room for a prompt in the model's context of "
                          f"{context} positions (max_position_embeddings)")
    bound = room
    if isinstance(max_prompt_tokens, int) and not isinstance(max_prompt_tokens, bool):
        if max_prompt_tokens > room:
            raise ConfigError(f"env.max_prompt_tokens: {max_prompt_tokens} + policy.max_new_tokens ({budget}) is over "
                              f"the model's context of {context} positions; at most {room}")
        bound = max_prompt_tokens
    lengths = [len(policy.encode(format_prompt(p, template))) for p in problems]
    over = [(p, n) for p, n in zip(problems, lengths) if n > bound]
    if not over:
        return problems
    if max_prompt_tokens is None:
        first, n = over[0]
        raise ProblemFormatError(
            f"{first.location or first.id}: a prompt of {n:,} tokens + policy.max_new_tokens ({budget}) is over the "
            f"model's context of {context} positions (max_position_embeddings); {len(over)} of the {len(problems)} "
            f"{what} prompts do not fit; env.max_prompt_tokens=filter drops them (or =N: prompts of at most N tokens), "
            "or lower policy.max_new_tokens")
    kept = [p for p, n in zip(problems, lengths) if n <= bound]
    say(f"env.max_prompt_tokens: dropped {len(over)} of the {len(problems)} {what} problems, whose prompts are over "
        f"{bound} tokens (the first: {over[0][0].location or over[0][0].id}, {over[0][1]:,} tokens)")
    if not kept:
        raise ConfigError(f"env.max_prompt_tokens: no {what} prompt has at most {bound} tokens")
    return kept
