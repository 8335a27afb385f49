"""Evaluation: estimators against enumeration, a scripted policy on a JSONL fixture, the
tabular estimate against the exact pass@k, the CLI, and evaluation during training."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.training.build import build_trainer, compose_config
from experiments.evaluation.evaluator import EvalParams, evaluate
from experiments.evaluation.passk import bootstrap_ci, exact_pass_at_k, maj_at_k, pass_at_k
from policies.base import Rollout
from rlvr_env import load_jsonl
from rlvr_env.protocol import exact_view
from rlvr_env.tasks import MathTask
from tests.conftest import run_cli


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=9), st.data())
def test_pass_at_k_equals_enumeration_over_subsets(row, data):
    """pass@k = share of the k-subsets of the n samples that contain a correct one."""
    n = len(row)
    k = data.draw(st.integers(1, n))
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(row[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(np.array([row]), k)[0] == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_large_n_and_bad_k():
    correct = np.zeros((1, 1024), dtype=bool)
    correct[0, 0] = True
    assert pass_at_k(correct, 256)[0] == pytest.approx(256 / 1024)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(correct, 2000)
    assert exact_pass_at_k(np.array([0.5]), 3)[0] == pytest.approx(0.875)


def test_maj_at_k_by_hand():
    answers = [["1", "2", "2", "3"], ["7", "5", "5", "7"], [None, None, "4", "4"], [None, None, None, None]]
    correct = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=bool)
    assert maj_at_k(answers, correct, 4).tolist() == [0.0, 0.0, 1.0, 0.0]  # row 2: tie 7/5 -> 7 seen first
    assert maj_at_k(answers, correct, 1).tolist() == [1.0, 0.0, 0.0, 0.0]  # no answer never wins
    assert maj_at_k(answers, correct, 3).tolist() == [0.0, 1.0, 1.0, 0.0]


class ScriptedPolicy:
    """Answers problem i with ``script[i][j]`` for its j-th sample (known answers)."""

    max_new_tokens = 8

    def __init__(self, script):
        self.script = script

    def sample(self, prompts, group_size, generator):
        texts = tuple(self.script[i][j] for i in prompts.index.tolist() for j in range(group_size))
        b = len(texts)
        lengths = torch.tensor([len(t) for t in texts]).clamp(max=8)
        mask = (torch.arange(8)[None, :] < lengths[:, None]).float()
        return Rollout(prompt_index=prompts.index.repeat_interleave(group_size), prompt_tokens=torch.zeros(b, 0, dtype=torch.long),
                       prompt_mask=torch.zeros(b, 0), tokens=torch.zeros(b, 8, dtype=torch.long), mask=mask,
                       old_logp=torch.zeros(b, 8), texts=texts, group_size=group_size, truncated=lengths >= 8)


def test_evaluate_a_scripted_policy_on_a_jsonl_fixture(tmp_path):
    rows = [{"problem": "1+1?", "answer": "2", "level": 1, "subject": "A"},
            {"problem": "2+3?", "answer": "5", "level": 2, "subject": "A"},
            {"problem": "7*6?", "answer": "42", "level": 5, "subject": "B"}]
    path = tmp_path / "fixture.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = MathTask(load_jsonl(path), [], seed=0)
    script = [[r"\boxed{2}", r"\boxed{2}", r"\boxed{3}", r"\boxed{2}"],         # 3/4 right, majority right
              [r"\boxed{4}", r"\boxed{4}", r"\boxed{5}", "no idea at all!!"],   # 1/4 right, majority wrong
              [r"\boxed{42}", "x", "y", "z"]]                                  # 1/4, three without answer... "x" has none
    result = evaluate(ScriptedPolicy(script), task, EvalParams(n=4, k=(1, 2, 4), bootstrap=200))
    m = result.metrics
    assert m["all"]["mean@4"]["value"] == pytest.approx((3 + 1 + 1) / 12)
    assert m["all"]["pass@2"]["value"] == pytest.approx((1 - 0 + (1 - 3 / 6) + (1 - 3 / 6)) / 3)  # C(1,2)=0, C(3,2)/C(4,2)
    assert m["all"]["pass@4"]["value"] == 1.0
    assert m["all"]["maj@4"]["value"] == pytest.approx(2 / 3)  # problem 3: the only answer, 42, wins
    assert m["all"]["no_answer_frac"]["value"] == pytest.approx((0 + 1 / 4 + 3 / 4) / 3)
    assert m["all"]["truncated_frac"]["value"] == pytest.approx(9 / 12)  # texts of >= 8 chars hit the budget of 8
    assert m["hard"]["mean@4"]["problems"] == 1 and m["easy"]["mean@4"]["problems"] == 2 and "medium" not in m
    assert m["level 5"]["mean@4"]["value"] == 0.25 and m["subject: A"]["mean@4"]["value"] == 0.5
    lo, hi = m["all"]["mean@4"]["lo"], m["all"]["mean@4"]["hi"]
    assert lo <= m["all"]["mean@4"]["value"] <= hi
    assert [s["reward"] for s in result.samples[:4]] == [1.0, 1.0, 0.0, 1.0]
    assert result.samples[4]["extracted"] == "4" and result.samples[7]["extracted"] is None


def test_tabular_estimate_lies_within_its_interval_of_the_exact_pass_at_k(tmp_path):
    trainer = build_trainer(compose_config("algo=grpo", "train.progress=false"), tmp_path)
    result = evaluate(trainer.policy, trainer.task, EvalParams(n=16, k=(1, 4, 16), seed=3),
                      exact=exact_view(trainer.task, trainer.policy))
    m = result.metrics["all"]
    assert m["mean@16"]["lo"] <= m["exact_pass@1"]["value"] <= m["mean@16"]["hi"]
    for k in (4, 16):
        assert m[f"pass@{k}"]["lo"] <= m[f"exact_pass@{k}"]["value"] <= m[f"pass@{k}"]["hi"]
    p = trainer.task.initial_p.double().numpy()
    assert m["exact_pass@4"]["value"] == pytest.approx(float(np.mean(1 - (1 - p) ** 4)), abs=1e-5)


def test_bootstrap_interval_covers_the_mean():
    values = np.random.default_rng(0).random(200)
    lo, hi = bootstrap_ci(values)
    assert lo < values.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * values.std() / math.sqrt(200), rel=0.2)


def test_eval_every_logs_eval_scalars_and_leaves_training_unchanged(tmp_path):
    base = ["algo=grpo_hadw", "train.steps=6", "train.progress=false"]
    plain = build_trainer(compose_config(*base), tmp_path / "a").train()
    evald = build_trainer(compose_config(*base, "train.eval_every=3", "eval.n=2", "eval.k=[1,2]"), tmp_path / "b").train()
    # at step 0 (logged with step 1), every 3 steps, and before the last update
    assert [("eval/accuracy" in h) for h in evald] == [True, False, False, True, False, True]
    assert {"eval/accuracy_hard", "eval/pass@2", "eval/maj@2", "eval/exact_pass@2"} <= set(evald[0])
    for a, b in zip(plain, evald):
        assert {k: v for k, v in b.items() if not k.startswith("eval/")} == a


@pytest.mark.slow
def test_cli_on_a_tabular_run_writes_json_md_and_samples(tmp_path):
    run = run_cli("algo=grpo", "train.steps=10", "train.progress=false", f"train.log_dir={tmp_path}", "train.run_name=r")
    assert run.returncode == 0, run.stderr
    out = run_cli(f"run={tmp_path / 'r'}", "eval.n=8", "eval.k=[1,8]", module="experiments.evaluate")
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "r" / "eval" / "train"
    record = json.loads((folder / "eval.json").read_text())
    assert record["eval"]["n"] == 8 and record["config"]["algo"]["name"] == "grpo" and "experiments.evaluate" in record["command"]
    assert set(record["metrics"]) >= {"all", "hard", "medium", "easy"}
    assert "exact_pass@8" in record["metrics"]["all"] and "| all | 256 |" in out.stdout
    assert len((folder / "samples.jsonl").read_text().splitlines()) == 256 * 8
    assert (folder / "eval.md").read_text().strip() in out.stdout

    refused = run_cli(f"run={tmp_path / 'r'}", "benchmark=math500", module="experiments.evaluate")
    assert refused.returncode == 2 and "benchmark=train" in refused.stderr
    bad = run_cli(f"run={tmp_path / 'r'}", "eval.n=0", module="experiments.evaluate")
    assert bad.returncode == 2 and "eval.n: must be >= 1" in bad.stderr


@pytest.mark.slow
def test_help_documents_every_field():
    import attrs

    from algorithms.registry import field_docs
    from experiments.evaluate import EvaluateOptions

    out = run_cli("--help", module="experiments.evaluate")
    assert out.returncode == 0
    for name in [f.name for f in attrs.fields(EvaluateOptions) if f.name != "eval"] + \
            [f"eval.{f.name}" for f in attrs.fields(EvalParams)]:
        doc = (field_docs(EvaluateOptions) | field_docs(EvalParams))[name.split(".")[-1]].splitlines()[0]
        assert f"  {name}=" in out.stdout and doc in out.stdout, name
    for key in ("math500", "gsm8k", "heldout", ".jsonl"):
        assert key in out.stdout
