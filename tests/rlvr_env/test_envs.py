"""Problem sources, Gymnasium envs, the PettingZoo arena, and their CLI runs."""

import json
import warnings

import gymnasium as gym
import pytest
import sympy
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test

import rlvr_env  # noqa: F401  (registers the ids)
from rlvr_env import ProblemFormatError, arithmetic_problems, format_prompt, load_jsonl
from rlvr_env.envs import ArenaEnv
from rlvr_env.problems import BOXED_INSTRUCTION, Problem
from tests.conftest import run_cli
from tests.rlvr_env.test_verifier import DATA, needs_data


def test_arithmetic_generator_is_seeded_and_correct():
    a, b = arithmetic_problems(50, seed=3), arithmetic_problems(50, seed=3)
    assert a == b and a != arithmetic_problems(50, seed=4)
    for p in a:
        assert int(p.answer) == int(sympy.sympify(p.metadata["expression"]))  # an independent evaluator
    assert {p.difficulty for p in a} == {1, 2, 3, 4, 5}
    assert any("(" in p.prompt for p in a if p.difficulty >= 4)
    with pytest.raises(ValueError, match="levels"):
        arithmetic_problems(3, levels=(9,))


def test_jsonl_loader_names_file_and_line(tmp_path):
    good = {"problem": "1+1?", "answer": "2", "level": 1, "subject": "x"}
    f = tmp_path / "mix.jsonl"
    f.write_text(json.dumps(good) + "\n" + json.dumps({"question": "q", "answer": "so #### 7"}) + "\n")
    probs = load_jsonl(f)
    assert probs[0] == Problem("mix-1", "1+1?", "2", 1, {"subject": "x"})
    assert probs[1].answer == "7" and probs[1].id == "mix-2"
    for bad, why in [("{not json", "not valid JSON"), (json.dumps({"problem": "p"}), "not a recognised problem row"),
                     (json.dumps({"question": "q", "answer": "no marker"}), "####"),
                     (json.dumps({"problem": "p", "answer": "1", "level": 9}), "level"),
                     (json.dumps({"problem": "p", "answer": "  "}), "empty answer"),
                     (json.dumps({"question": "q", "answer": "so #### "}), "empty answer")]:
        f.write_text(json.dumps(good) + "\n\n" + bad + "\n")
        with pytest.raises(ProblemFormatError, match=rf"mix.jsonl:3: .*{why}"):
            load_jsonl(f)


@needs_data
@pytest.mark.parametrize("name, count", [("math500", 500), ("aime24", 30), ("aime25", 30), ("amc2023", 40),
                                         ("minervamath", 272), ("olympiadbench", 674), ("gsm8k_test", 1319)])
def test_shared_benchmarks_load(name, count):
    probs = load_jsonl(DATA / f"{name}.jsonl")
    assert len(probs) == count and all(p.answer for p in probs)
    if name == "math500":
        assert {p.difficulty for p in probs} == {1, 2, 3, 4, 5} and "subject" in probs[0].metadata


def test_templates():
    p = Problem("x", "What is 1+1?", "2")
    assert format_prompt(p, "plain") == "What is 1+1?"
    assert format_prompt(p, "boxed").endswith(BOXED_INSTRUCTION)
    already = Problem("y", "Q?\n" + BOXED_INSTRUCTION, "2")
    assert format_prompt(already, "boxed").count(BOXED_INSTRUCTION) == 1
    with pytest.raises(ValueError, match="chat template"):
        format_prompt(p, "chat")

    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return f"<user>{messages[0]['content']}</user><assistant>"

    assert format_prompt(p, "chat", Tok()).startswith("<user>What is 1+1?")


ENVS = [("rlvr/Arithmetic-v0", {"num_problems": 20}), ("rlvr/Arithmetic-v0", {"num_problems": 20, "group_size": 4}),
        ("rlvr/Bandit-v0", {"num_prompts": 30})]


@pytest.mark.parametrize("env_id, kwargs", ENVS)
def test_check_env(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # check_env's warnings count as failures
        check_env(env.unwrapped)


@needs_data
def test_check_env_jsonl():
    check_env(gym.make("rlvr/MathJsonl-v0", path=str(DATA / "math500.jsonl"), limit=30).unwrapped)


def test_jsonl_env_without_path_says_to_pass_path(tmp_path):
    with pytest.raises(TypeError, match=r'needs path, a JSONL file of problems, as in gymnasium.make\("rlvr/MathJsonl-v0", path='):
        gym.make("rlvr/MathJsonl-v0")
    with pytest.raises(FileNotFoundError, match="no such problem file"):
        gym.make("rlvr/MathJsonl-v0", path=str(tmp_path / "absent.jsonl"))


def test_math_env_rewards_and_grouped_form():
    env = gym.make("rlvr/Arithmetic-v0", num_problems=10, group_size=3)
    obs, info = env.reset(seed=0, options={"index": 2})
    answer = env.unwrapped.problems[2].answer
    assert obs.endswith(BOXED_INSTRUCTION) and info["problem_id"] == env.unwrapped.problems[2].id
    _, reward, terminated, truncated, info = env.step((rf"\boxed{{{answer}}}", "no idea", f"#### {answer}"))
    assert info["rewards"] == [1.0, 0.0, 1.0] and reward == pytest.approx(2 / 3)
    assert terminated and not truncated and info["correct"] == [True, False, True]
    first = [env.reset(seed=5)[0] for _ in range(2)]
    assert first[0] == first[1]  # seeded the Gymnasium way


def test_arena_passes_the_parallel_api_test():
    parallel_api_test(ArenaEnv(["grpo", "grpo_hadw", "dapo"], arithmetic_problems(12)), num_cycles=30)


def test_arena_serves_the_same_prompt_to_every_agent():
    arena = ArenaEnv(["a", "b"], arithmetic_problems(12), num_steps=3)
    obs, _ = arena.reset(seed=1)
    assert obs["a"] == obs["b"]
    answer = arena.problems[arena.index].answer
    _, rewards, *_ = arena.step({"a": rf"\boxed{{{answer}}}", "b": "wrong"})
    assert rewards == {"a": 1.0, "b": 0.0}


@pytest.mark.slow
def test_cli_arithmetic_and_arena(tmp_path):
    out = run_cli("env=arithmetic", "train.steps=20", f"train.log_dir={tmp_path / 'a'}", "train.progress=false")
    assert out.returncode == 0, out.stderr
    assert "grpo_hadw on arithmetic: 20 steps" in out.stdout
    out = run_cli("arena=[grpo,grpo_hadw]", "train.steps=20", f"train.log_dir={tmp_path / 'b'}", "train.progress=false")
    assert out.returncode == 0, out.stderr
    assert "paired comparison on identical prompts (20 steps" in out.stdout
    assert "grpo_hadw - grpo: batch accuracy per step" in out.stdout
    arena_dir = next((tmp_path / "b").iterdir())
    assert sorted(p.name for p in arena_dir.iterdir()) == ["grpo", "grpo_hadw"]
    assert list((arena_dir / "grpo").glob("events.out.tfevents.*"))
    bad = run_cli("arena=[grpo]", f"train.log_dir={tmp_path / 'c'}")
    assert bad.returncode == 2 and "two or more distinct" in bad.stderr


def test_candidate_task_scores_free_text_like_a_language_model(make_cfg, tmp_path):
    """The arithmetic task scores generated text (rollout.texts) with the verifier, in bulk."""
    import torch

    from experiments.training.build import build_trainer
    from policies import Rollout

    trainer = build_trainer(make_cfg("env=arithmetic", "env.num_problems=40", "train.prompts_per_step=40", "train.progress=false"), tmp_path)
    task = trainer.task
    prompts = task.sample_prompts(40)
    texts = []
    for i in prompts.index.tolist():
        answer = task.problems[i].answer
        texts += [rf"so it is \boxed{{{answer}}}", f"#### {int(answer) + 1}"]  # one right, one wrong per group
    rollout = Rollout(prompt_index=prompts.index.repeat_interleave(2), prompt_tokens=torch.zeros(80, 0, dtype=torch.long),
                      prompt_mask=torch.zeros(80, 0), tokens=torch.zeros(80, 1, dtype=torch.long), mask=torch.ones(80, 1),
                      old_logp=torch.zeros(80, 1), texts=tuple(texts), group_size=2)
    rewards = task.rewards(prompts, rollout)  # 80 unseen texts: verified in worker processes
    assert rewards.tolist() == [[1.0, 0.0]] * 40
    # No exact p for a policy without an answer distribution (a language model): decided at build time.
    from rlvr_env.protocol import exact_view
    assert exact_view(task, object()) is None and exact_view(task, trainer.policy) is task
