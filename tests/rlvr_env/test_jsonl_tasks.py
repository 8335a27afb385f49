"""Training on the JSONL benchmarks: presets, data folder, held-out splits, clear errors."""


import pytest
import torch

from algorithms import ConfigError
from experiments.training.build import build_trainer, compose_config
from policies.base import Rollout
from rlvr_env import TASKS
from rlvr_env.datasets import default_data_dir
from rlvr_env.protocol import ExactTask, Task

DATA = default_data_dir()
needs_data = pytest.mark.skipif(not (DATA / "math500.jsonl").is_file(), reason=f"benchmark data not found at {DATA}")


def make_task(*overrides):
    cfg = compose_config(*overrides, *([f"env.data_dir={DATA}"] if "env=arithmetic" not in overrides else []))
    entry, params = TASKS.make_params(cfg["env"], "env")
    return entry.target(params, seed=0)


def text_rollout(prompts, texts, group_size):
    b = len(texts)
    return Rollout(prompt_index=prompts.index.repeat_interleave(group_size), prompt_tokens=torch.zeros(b, 0, dtype=torch.long),
                   prompt_mask=torch.zeros(b, 0), tokens=torch.zeros(b, 1, dtype=torch.long), mask=torch.ones(b, 1),
                   old_logp=torch.zeros(b, 1), texts=tuple(texts), group_size=group_size)


@needs_data
@pytest.mark.parametrize("preset, total", [("math500", 500), ("aime24", 30), ("aime25", 30), ("amc2023", 40),
                                           ("minervamath", 272), ("olympiadbench", 674)])
def test_presets_split_each_benchmark(preset, total):
    task = make_task(f"env={preset}")
    assert isinstance(task, Task) and not isinstance(task, ExactTask)
    assert len(task) + len(task.heldout) == total
    assert not {p.id for p in task.problems} & {p.id for p in task.heldout}


@needs_data
def test_math500_buckets_follow_levels_and_rewards_come_from_the_verifier():
    task = make_task("env=math500")
    levels = torch.tensor([p.difficulty for p in task.problems])
    assert torch.equal(task.buckets, torch.where(levels >= 4, 0, torch.where(levels == 3, 1, 2)))
    prompts = task.sample_prompts(8)
    texts = []
    for i in prompts.index.tolist():
        texts += [rf"... so \boxed{{{task.problems[i].answer}}}", "I give up."]
    assert task.rewards(prompts, text_rollout(prompts, texts, 2)).tolist() == [[1.0, 0.0]] * 8
    again = make_task("env=math500")  # the held-out split is seeded
    assert [p.id for p in again.heldout] == [p.id for p in task.heldout]


@needs_data
def test_gsm8k_holds_out_its_test_file():
    task = make_task("env=gsm8k")
    assert len(task) == 7473 and len(task.heldout) == 1319


def test_jsonl_errors_name_the_field_and_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"env\.path: missing"):
        make_task("env=jsonl")
    with pytest.raises(ConfigError, match=r"env\.path: no such file .*nope\.jsonl.*env\.data_dir"):
        make_task("env=jsonl", "env.path=nope.jsonl")
    (tmp_path / "two.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?", "answer": "4"}\n')
    with pytest.raises(ConfigError, match=r"env\.heldout: .* leaves no training problems"):
        make_task("env=jsonl", f"env.path={tmp_path / 'two.jsonl'}", "env.heldout=2")
    with pytest.raises(ConfigError, match=r"env\.heldout: must be a count"):
        make_task("env=jsonl", f"env.path={tmp_path / 'two.jsonl'}", "env.heldout=1.5")


def test_tabular_policy_refuses_a_task_without_candidates(tmp_path):
    (tmp_path / "p.jsonl").write_text("".join(f'{{"problem": "{i}+1?", "answer": "{i + 1}"}}\n' for i in range(20)))
    cfg = compose_config("env=jsonl", f"env.path={tmp_path / 'p.jsonl'}", "train.prompts_per_step=4")
    with pytest.raises(ConfigError, match="policy=tabular needs a task with candidate answers"):
        build_trainer(cfg, tmp_path / "run")


def test_arithmetic_heldout_is_disjoint_and_leaves_training_problems_unchanged():
    a, b = make_task("env=arithmetic", "env.heldout=0"), make_task("env=arithmetic", "env.heldout=200")
    assert [p.prompt for p in a.problems] == [p.prompt for p in b.problems] and a.heldout == []
    assert 150 < len(b.heldout) <= 200
    assert not {p.prompt for p in b.problems} & {p.prompt for p in b.heldout}
    assert {p.difficulty for p in b.heldout} == {1, 2, 3, 4, 5}


def test_arithmetic_training_stays_outside_the_hash_split_so_large_sets_keep_every_level_held_out():
    from rlvr_env.problems import in_held_out_split

    # 4096 training problems draw every one of level 1's 243 questions many times over; those
    # in the hash split must still be left for evaluation, and the rest trained on.
    task = make_task("env=arithmetic", "env.num_problems=4096", "env.heldout=500")
    assert len(task.problems) == 4096 and not any(in_held_out_split(p.prompt) for p in task.problems)
    assert all(in_held_out_split(p.prompt) for p in task.heldout) and len({p.prompt for p in task.heldout}) == 500
    level1 = {f"What is {a} {op} {b}?" for a in range(1, 10) for b in range(1, 10) for op in "+-*"}  # all 243
    split1 = {q for q in level1 if in_held_out_split(q)}
    trained1 = {p.prompt for p in task.problems if p.difficulty == 1}
    assert trained1 <= level1 - split1 and len(trained1) > 150 and {p.prompt for p in task.heldout if p.difficulty == 1}
    from rlvr_env import verify

    for i in range(0, 4096, 97):  # the candidate table agrees with the verifier that scores the texts
        assert [verify(c, task.problems[i].answer).reward > 0.5 for c in task.candidates[i]] == task.correct[i].tolist()
    # a level with fewer distinct held-out questions than asked for: the search ends with all of them
    small = make_task("env=arithmetic", "env.levels=[1]", "env.num_problems=64", "env.heldout=400")
    assert [p.prompt for p in small.heldout] == list(dict.fromkeys(p.prompt for p in small.heldout))  # distinct
    assert {p.prompt for p in small.heldout} == split1 and 40 < len(split1) < 80
