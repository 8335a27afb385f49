"""Problem files (rlvr_env/sources.py): JSONL, Parquet and datasets folders through one reader,
the column mapping, and the checks every source goes through, by their exact messages."""

import json
import re
from pathlib import Path

import pytest

from algorithms import ConfigError
from algorithms.registry import FieldError
from rlvr_env import ProblemFormatError, load_jsonl
from rlvr_env.problems import Problem
from rlvr_env.sources import check_columns, fit_context, load_problems, normalised
from rlvr_env.tasks import JsonlParams, JsonlTask, split_heldout

ROWS = [{"q": f"What is {i} + 1?", "final": str(i + 1), "src": "mine", "score": i / 2, "tags": ["a", str(i)],
         "extra": {"k": i}} for i in range(6)]
COLUMNS = {"prompt": "q", "answer": "final"}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_a_column_mapping_reads_jsonl_parquet_and_datasets_folders_alike(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    datasets = pytest.importorskip("datasets")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "own.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "own_ds"))
    from_jsonl = load_problems(write_jsonl(tmp_path / "own.jsonl", ROWS), COLUMNS)
    assert from_jsonl[2] == Problem("own-3", "What is 2 + 1?", "3", None,
                                    {"src": "mine", "score": 1.0, "tags": ["a", "2"], "extra": {"k": 2}})
    assert from_jsonl[2].location == f"{tmp_path / 'own.jsonl'}:3"
    for path in (tmp_path / "own.parquet", tmp_path / "own_ds"):
        got = load_problems(path, COLUMNS)
        assert [(p.prompt, p.answer, p.metadata) for p in got] == [(p.prompt, p.answer, p.metadata) for p in from_jsonl]
        assert got[2].id == f"{path.stem if path.is_file() else path.name}-2" and got[2].location == f"{path}[row 2]"
    # level and id columns; a number as the answer is its text
    rows = [{"text": "Q1", "ans": 6, "lvl": 4, "uid": "a"}, {"text": "Q2", "ans": "7", "lvl": None, "uid": "b"}]
    got = load_problems(write_jsonl(tmp_path / "l.jsonl", rows), {"prompt": "text", "answer": "ans", "level": "lvl", "id": "uid"})
    assert got == [Problem("a", "Q1", "6", 4, {}), Problem("b", "Q2", "7", None, {})]


def test_a_datasets_dict_folder_names_its_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ProblemFormatError, match=re.escape(f"{tmp_path / 'dd'}: a DatasetDict (splits train); name one "
                                                           f"split's folder, e.g. env.path={tmp_path / 'dd' / 'train'}")):
        load_problems(tmp_path / "dd", COLUMNS)
    assert len(load_problems(tmp_path / "dd" / "train", COLUMNS)) == 6
    (tmp_path / "plain").mkdir()
    with pytest.raises(ProblemFormatError, match="not a dataset written by Dataset.save_to_disk"):
        load_problems(tmp_path / "plain")


def test_mapping_errors_name_the_option(tmp_path):
    for value, why in [({"prompt": "q"}, "missing answer"), ({"prompt": "q", "answer": "a", "solution": "s"}, "unknown key"),
                       ({"prompt": "q", "answer": "q"}, "the same column"), (["q", "a"], "must be a mapping")]:
        with pytest.raises(FieldError, match=why):
            check_columns(value)
    with pytest.raises(ValueError, match="env.columns: missing answer"):
        from algorithms.registry import build_params
        build_params(JsonlParams, {"path": "x", "columns": {"prompt": "q"}}, "env")
    f = write_jsonl(tmp_path / "own.jsonl", ROWS)
    with pytest.raises(ProblemFormatError, match=re.escape(f"{f}:1: not a recognised problem row: no column 'question' "
                                                           "(env.columns.prompt); the row has ['extra', 'final', 'q'")):
        load_problems(f, {"prompt": "question", "answer": "final"})


def test_an_unrecognised_row_lists_the_accepted_keys_and_the_mapping(tmp_path):
    f = write_jsonl(tmp_path / "own.jsonl", ROWS)
    with pytest.raises(ProblemFormatError) as err:
        load_jsonl(f)
    assert str(err.value) == (
        f"{f}:1: not a recognised problem row: keys ['extra', 'final', 'q', 'score', 'src', 'tags']; a row needs "
        'question + answer (GSM8K: answer "... #### N"); problem + answer (MATH500 / AIME / AMC / Minerva / '
        "OlympiadBench; level 1-5 optional); or map your columns: env.columns={prompt: COLUMN, answer: COLUMN} "
        "(level, id optional)")


@pytest.mark.parametrize("answer, why", [
    ('""', "empty answer"), ('"   "', "empty answer"), ('"$$"', r"empty answer '\$\$'"),
    (r'"\\boxed{}"', "empty answer"), ("null", r"empty answer \(null\)"),
    ("NaN", "the answer is nan, not a reference"), ('"nan"', "the answer is 'nan', not a reference"),
    (json.dumps("9" * 501), "an answer of 501 characters, over env.max_answer_chars \\(500\\)"),
])
def test_empty_nan_and_overlong_answers_are_refused_naming_the_line(tmp_path, answer, why):
    f = tmp_path / "a.jsonl"
    f.write_text('{"q": "What is 1+1?", "final": "2"}\n' + f'{{"q": "What is 2+2?", "final": {answer}}}\n')
    with pytest.raises(ProblemFormatError, match=rf"^{re.escape(str(f))}:2: not a recognised problem row: {why}"):
        load_problems(f, COLUMNS)


def test_the_same_problem_with_another_answer_names_both_lines_and_exact_duplicates_are_dropped(tmp_path, capsys):
    f = write_jsonl(tmp_path / "d.jsonl", [{"problem": "What is 2+4?", "answer": "6"}, {"problem": "Other", "answer": "1"},
                                           {"problem": " What is  2+4? ", "answer": "7"}])
    with pytest.raises(ProblemFormatError) as err:
        load_jsonl(f)
    assert str(err.value) == (f"{f}:3: the same problem as {f}:1 with another answer ('7' against '6'); keep one of "
                              "the rows or fix the answer")
    write_jsonl(f, [{"problem": "What is 2+4?", "answer": "6"}, {"problem": "Other", "answer": "1"},
                    {"problem": "What is  2+4?\n", "answer": " 6"}, {"problem": "Other", "answer": "1"},
                    {"problem": "what is 2+4?", "answer": "6"}])  # case kept: another problem
    got = load_jsonl(f)
    assert [p.id for p in got] == ["d-1", "d-2", "d-5"]
    assert capsys.readouterr().err == (f"{f}: dropped 2 exact duplicate row(s) (the same problem text up to whitespace, "
                                       f"the same answer), the first at {f}:3 (a repeat of {f}:1)\n")


def test_a_row_over_the_byte_bound_is_refused_before_it_is_parsed(tmp_path):
    f = tmp_path / "big.jsonl"
    f.write_text('{"problem": "p", "answer": "1"}\n' + "{" * 3000 + "\n")  # not JSON either: the bound comes first
    with pytest.raises(ProblemFormatError, match=re.escape(f"{f}:2: a row of more than 2,000 bytes (env.max_row_bytes)")):
        load_problems(f, max_row_bytes=2000)
    with pytest.raises(ProblemFormatError, match=re.escape(f"{f}:2: not valid JSON")):
        load_problems(f, max_row_bytes=4000)
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist([{"q": "x", "final": "1"}, {"q": "y" * 3000, "final": "2"}]), tmp_path / "b.parquet")
    with pytest.raises(ProblemFormatError, match=re.escape(f"{tmp_path / 'b.parquet'}[row 1]: a row of 3,001 bytes, "
                                                           "over env.max_row_bytes (2,000)")):
        load_problems(tmp_path / "b.parquet", COLUMNS, max_row_bytes=2000)


def test_bytes_that_are_not_utf8_name_line_byte_and_column(tmp_path):
    f = tmp_path / "latin1.jsonl"
    f.write_bytes(b'{"problem": "p", "answer": "1"}\n' + '{"problem": "cé", "answer": "2"}\n'.encode("latin-1"))
    with pytest.raises(ProblemFormatError) as err:
        load_jsonl(f)
    assert str(err.value) == f"{f}:2: not UTF-8 (byte 0xe9 at column 15)"
    f.write_bytes(b"\xef\xbb\xbf" + '{"problem": "é", "answer": "2"}\n'.encode())  # a BOM is no problem
    assert load_jsonl(f)[0].prompt == "é"


def test_the_heldout_split_is_over_unique_problems(tmp_path, capsys):
    rows = [{"problem": f"Problem {i}", "answer": str(i)} for i in range(30)]
    rows += [{"problem": f"Problem  {i} ", "answer": str(i)} for i in range(30)]  # every one again, spaced
    f = write_jsonl(tmp_path / "dup.jsonl", rows)
    task = JsonlTask(JsonlParams(path=str(f), heldout=0.2), seed=0)
    train, held = {normalised(p.prompt) for p in task.problems}, {normalised(p.prompt) for p in task.heldout}
    assert len(task.problems) == 24 and len(task.heldout) == 6 and not train & held
    assert "dropped 30 exact duplicate row(s)" in capsys.readouterr().err
    # split_heldout itself splits unique problems, and is the plain permutation where there are no repeats
    problems = [Problem(f"p{i}", f"Q {i % 10}", "1") for i in range(20)]
    tr, he = split_heldout(problems, 3, seed=1)
    assert len(tr) + len(he) == 10 and not {p.prompt for p in tr} & {p.prompt for p in he}
    assert split_heldout(problems[:10], 3, seed=1) == (tr, he)


def test_training_rows_that_are_also_in_the_heldout_file_are_dropped(tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", [{"problem": f"Q{i}", "answer": str(i)} for i in range(10)])
    held = write_jsonl(tmp_path / "test.jsonl", [{"problem": "Q3", "answer": "3"}, {"problem": "Q 7", "answer": "7"},
                                                 {"problem": "Q7", "answer": "7"}])
    task = JsonlTask(JsonlParams(path=str(train), heldout_path=str(held)), seed=0)
    assert [p.prompt for p in task.heldout] == ["Q3", "Q 7", "Q7"]  # "Q 7" is another text than "Q7"
    assert [p.id for p in task.problems] == [f"train-{i}" for i in (1, 2, 3, 5, 6, 7, 9, 10)]
    assert "env.heldout_path: dropped 2 training problem(s) that are also held out" in capsys.readouterr().err
    write_jsonl(held, [{"problem": "Q3", "answer": "4"}])
    with pytest.raises(ProblemFormatError, match=re.escape(f"{train}:4: the same problem as {held}:1 with another answer")):
        JsonlTask(JsonlParams(path=str(train), heldout_path=str(held)), seed=0)


class CharPolicy:
    """A policy stand-in: one token per character, a context of 64 positions."""

    context_length, max_new_tokens = 64, 16

    def encode(self, text):
        return list(text)


def test_prompts_over_the_context_are_refused_or_filtered(tmp_path, capsys):
    problems = [Problem(f"p{i}", "x" * n, "1", location=f"f.jsonl:{i + 1}") for i, n in enumerate([10, 60, 40, 20])]
    with pytest.raises(ProblemFormatError) as err:
        fit_context(problems, "plain", CharPolicy(), None, "training")
    assert str(err.value) == ("f.jsonl:2: a prompt of 60 tokens + policy.max_new_tokens (16) is over the model's "
                              "context of 64 positions (max_position_embeddings); 1 of the 4 training prompts do not "
                              "fit; env.max_prompt_tokens=filter drops them (or =N: prompts of at most N tokens), or "
                              "lower policy.max_new_tokens")
    assert [p.id for p in fit_context(problems, "plain", CharPolicy(), "filter", "training")] == ["p0", "p2", "p3"]
    assert "dropped 1 of the 4 training problems, whose prompts are over 48 tokens" in capsys.readouterr().err
    assert [p.id for p in fit_context(problems, "plain", CharPolicy(), 20, "training")] == ["p0", "p3"]
    with pytest.raises(ConfigError, match=r"env.max_prompt_tokens: 50 \+ policy.max_new_tokens \(16\) is over"):
        fit_context(problems, "plain", CharPolicy(), 50, "training")
    assert fit_context(problems, "plain", object(), None, "training") == problems  # tabular: no context, no check


def test_the_readme_example_of_your_own_dataset_runs_as_pasted(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    section = (ROOT / "README.md").read_text().split("### Your own dataset", 1)[1].split("\n### ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    (tmp_path / "example.py").write_text(code)
    done = subprocess.run([sys.executable, str(tmp_path / "example.py")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    printed = re.search(r"^# (\[.*\])$", code, flags=re.M).group(1)
    assert done.stdout.strip() == printed  # what the README says it prints
    assert "dropped 1 exact duplicate row(s)" in done.stderr and done.stderr.count("\n") == 1


def test_evaluated_benchmark_files_go_through_the_same_loader(tmp_path):
    from types import SimpleNamespace

    from experiments.evaluation.benchmarks import benchmark_task

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(ROWS + ROWS[:2]), tmp_path / "test.parquet")
    trainer = SimpleNamespace(policy=CharPolicy(), task=None)
    task, exact = benchmark_task(str(tmp_path / "test.parquet"), trainer, {"env": {"columns": COLUMNS, "template": "plain"}})
    assert exact is None and [p.id for p in task.problems] == [f"test-{i}" for i in range(6)]  # duplicates dropped
    assert task.problems[0].metadata["src"] == "mine"
    pq.write_table(pa.Table.from_pylist([{"q": "x" * 60, "final": "1"}]), tmp_path / "long.parquet")
    with pytest.raises(ProblemFormatError, match=re.escape(f"{tmp_path / 'long.parquet'}[row 0]: a prompt of")):
        benchmark_task(str(tmp_path / "long.parquet"), trainer, {"env": {"columns": COLUMNS, "template": "plain"}})
