"""Data faults as a user meets them: ``python -m experiments.run env=jsonl env.path=BAD ...`` ends with
exit 2 and one ``error:`` line naming the file and line, no traceback, no run directory."""

from __future__ import annotations

import json

import pytest

from tests.conftest import one_error_line, run_cli

pytestmark = pytest.mark.slow  # the program in subprocesses: python -m pytest -m 'not slow' skips them

GOOD = [json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) for i in range(12)]


def refused(tmp_path, rows: list[str] | bytes, *args: str) -> str:
    data = tmp_path / "BAD.jsonl"
    if isinstance(rows, bytes):
        data.write_bytes(rows)
    else:
        data.write_text("\n".join(rows) + "\n")
    runs = tmp_path / "runs"
    out = run_cli("env=jsonl", f"env.path={data}", f"train.log_dir={runs}", "train.steps=1", *args)
    assert out.returncode == 2, out.stderr
    assert not runs.exists()  # nothing written
    return one_error_line(out.stderr).replace(str(data), "BAD.jsonl")


@pytest.mark.parametrize("bad, expected", [
    (json.dumps({"problem": "What is 2 + 2?", "answer": ""}),
     "BAD.jsonl:13: not a recognised problem row: empty answer (a reference that matches nothing)"),
    (json.dumps({"problem": "What is 2 + 2?", "answer": "$$"}),
     "BAD.jsonl:13: not a recognised problem row: empty answer '$$' (blank or markup around nothing: a reference "
     "that matches nothing)"),
    ('{"problem": "What is 2 + 2?", "answer": NaN}',
     "BAD.jsonl:13: not a recognised problem row: the answer is 'nan', not a reference (a missing value?)"),
    (json.dumps({"problem": "What is 2 + 2?", "answer": "4" * 600}),
     "BAD.jsonl:13: not a recognised problem row: an answer of 600 characters, over env.max_answer_chars (500); "
     "the verifier refuses longer extracted answers, so it could never be matched"),
    (json.dumps({"problem": "What is  3 + 1? ", "answer": "7"}),
     "BAD.jsonl:13: the same problem as BAD.jsonl:4 with another answer ('7' against '4'); keep one of the rows or "
     "fix the answer"),
    (json.dumps({"q": "What is 2 + 2?", "a": "4"}),
     "BAD.jsonl:13: not a recognised problem row: keys ['a', 'q']; a row needs question + answer (GSM8K: answer "
     '"... #### N"); problem + answer (MATH500 / AIME / AMC / Minerva / OlympiadBench; level 1-5 optional); or map '
     "your columns: env.columns={prompt: COLUMN, answer: COLUMN} (level, id optional)"),
    ("{not json", "BAD.jsonl:13: not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
], ids=["empty", "markup", "nan", "long", "conflict", "unknown-keys", "json"])
def test_a_malformed_row_is_one_error_line_naming_file_and_line(tmp_path, bad, expected):
    assert refused(tmp_path, GOOD + [bad]) == f"error: {expected}"


def test_a_file_that_is_not_utf8_names_line_byte_and_column(tmp_path):
    rows = ("\n".join(GOOD) + "\n").encode() + '{"problem": "cé", "answer": "2"}\n'.encode("latin-1")
    assert refused(tmp_path, rows) == "error: BAD.jsonl:13: not UTF-8 (byte 0xe9 at column 15)"


def test_a_row_over_the_byte_bound_is_refused_before_it_is_parsed(tmp_path):
    big = json.dumps({"problem": "x" * 2_000_000, "answer": "1"})
    assert refused(tmp_path, GOOD + [big]) == ("error: BAD.jsonl:13: a row of more than 1,000,000 bytes "
                                               "(env.max_row_bytes); raise it if such rows are meant")


def test_a_mapped_column_that_is_missing_names_the_option(tmp_path):
    line = refused(tmp_path, GOOD, "env.columns={prompt: q, answer: final}")
    assert line == ("error: BAD.jsonl:1: not a recognised problem row: no column 'q' (env.columns.prompt), 'final' "
                    "(env.columns.answer); the row has ['answer', 'problem']")


def test_prompts_over_the_models_context_are_refused_before_the_run_directory_or_filtered(tmp_path):
    """tiny-qwen3 (random init) has 1,024 positions; a 1.7k-character prompt is 1.7k tokens."""
    rows = GOOD[:3] + [json.dumps({"problem": "What is 1 + 1? " + "x" * 1700, "answer": "2"})] + GOOD[3:]
    tiny = ["policy=tiny-qwen3", f"policy.model_path={tmp_path / 'tiny'}", "policy.warm_start.steps=0",
            "train.prompts_per_step=2", "train.group_size=2", "train.eval_every=0", "train.progress=false"]
    assert refused(tmp_path, rows, *tiny) == (
        "error: BAD.jsonl:4: a prompt of 1,725 tokens + policy.max_new_tokens (16) is over the model's context of 1024 "
        "positions (max_position_embeddings); 1 of the 12 training prompts do not fit; env.max_prompt_tokens=filter "
        "drops them (or =N: prompts of at most N tokens), or lower policy.max_new_tokens")
    out = run_cli("env=jsonl", f"env.path={tmp_path / 'BAD.jsonl'}", f"train.log_dir={tmp_path / 'runs'}",
                  "train.steps=1", "env.max_prompt_tokens=filter", "env.heldout=0", *tiny)
    assert out.returncode == 0, out.stderr
    assert (f"env.max_prompt_tokens: dropped 1 of the 13 training problems, whose prompts are over 1008 tokens (the "
            f"first: {tmp_path / 'BAD.jsonl'}:4, 1,725 tokens)") in out.stderr
