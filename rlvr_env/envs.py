"""Gymnasium environments (registered on ``import rlvr_env``) and the PettingZoo arena.

    gymnasium.make("rlvr/Arithmetic-v0", num_problems=100, group_size=None)
    gymnasium.make("rlvr/MathJsonl-v0", path="../shared/data/math500.jsonl")
    gymnasium.make("rlvr/Bandit-v0")
"""

from __future__ import annotations

import functools
import string

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from rlvr_env.bandit import BanditParams, BanditTask
from rlvr_env.problems import Problem, arithmetic_problems, format_prompt
from rlvr_env.sources import load_jsonl
from rlvr_env.verifier import VerifyConfig
from rlvr_env.verifier_pool import verify

BASE_CHARSET = string.printable


def charset_for(texts) -> str:
    """Printable ASCII plus every character of ``texts`` (prompts may hold LaTeX, unicode)."""
    return "".join(sorted(set(BASE_CHARSET).union(*map(set, texts))))


def text_spaces(prompts: list[str], max_completion_chars: int) -> tuple[spaces.Text, spaces.Text]:
    """(observation, completion) Text spaces over the prompts' characters."""
    charset = charset_for(prompts)
    return (spaces.Text(max_length=max(map(len, prompts)), min_length=0, charset=charset),
            spaces.Text(max_length=max_completion_chars, min_length=0, charset=charset))


class MathEnv(gym.Env):
    """Single-step math problems with a verifier reward.

    ## Description
    Each episode serves one problem; the agent answers with a completion, which the
    verifier scores (``rlvr_env.verify``: final-answer extraction and math-verify).

    ## Observation
    ``Text``: the prompt (the problem in the chosen template).

    ## Action
    ``Text``: a completion. With ``group_size=G``, a ``Tuple`` of G completions for the
    same prompt (the grouped form used by group-relative methods). Any string is accepted;
    unscorable text gets reward 0.

    ## Reward
    1.0 for an answer equivalent to the reference, else 0.0; grouped: the mean, with every
    completion's reward in ``info["rewards"]``.

    ## Episode end
    Terminated after one step.

    ## Arguments
    problems: the problem list; template: plain | boxed; group_size: None or G >= 2;
    verify_config: ``VerifyConfig``; max_completion_chars: the action space's text bound.
    """

    metadata = {"render_modes": []}

    def __init__(self, problems: list[Problem], template: str = "boxed", group_size: int | None = None,
                 verify_config: VerifyConfig = VerifyConfig(), max_completion_chars: int = 4096):
        if not problems:
            raise ValueError("MathEnv needs at least one problem")
        if group_size is not None and group_size < 2:
            raise ValueError(f"group_size must be None or >= 2, got {group_size}")
        self.problems = problems
        self.prompts = [format_prompt(p, template) for p in problems]
        self.group_size = group_size
        self.verify_config = verify_config
        self.observation_space, completion = text_spaces(self.prompts, max_completion_chars)
        self.action_space = completion if group_size is None else spaces.Tuple([completion] * group_size)
        self.index = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        index = options.get("index")
        self.index = int(self.np_random.integers(len(self.problems))) if index is None else int(index)
        return self.prompts[self.index], self._info()

    def step(self, action):
        problem = self.problems[self.index]
        completions = [action] if self.group_size is None else list(action)
        verdicts = [verify(c if isinstance(c, str) else "", problem.answer, self.verify_config) for c in completions]
        rewards = [v.reward for v in verdicts]
        info = self._info()
        info.update(extracted=[v.extracted for v in verdicts], correct=[v.reward > 0.5 for v in verdicts],
                    reasons=[v.reason for v in verdicts], rewards=rewards)
        if self.group_size is None:
            info.update(extracted=info["extracted"][0], correct=info["correct"][0], reasons=info["reasons"][0])
        return self.prompts[self.index], float(np.mean(rewards)), True, False, info

    def _info(self) -> dict:
        p = self.problems[self.index]
        return {"problem_id": p.id, "difficulty": p.difficulty}


def make_arithmetic_env(num_problems: int = 256, levels=(1, 2, 3, 4, 5), seed: int = 0, **kwargs) -> MathEnv:
    return MathEnv(arithmetic_problems(num_problems, levels, seed), **kwargs)


def make_jsonl_env(path: str | None = None, limit: int | None = None, **kwargs) -> MathEnv:
    if path is None:
        raise TypeError('rlvr/MathJsonl-v0 needs path, a JSONL file of problems, as in '
                        'gymnasium.make("rlvr/MathJsonl-v0", path="../shared/data/math500.jsonl")')
    return MathEnv(load_jsonl(path, limit), **kwargs)


class BanditEnv(gym.Env):
    """The bandit problem source as a Gymnasium env.

    ## Description
    One bandit prompt per episode; the answer is the index of one of K candidates.
    ## Observation
    ``Text``: "bandit prompt i".
    ## Action
    ``Text``: the candidate index as a decimal string ("0".."K-1"); anything else scores 0.
    ## Reward
    1.0 if the candidate is correct, else 0.0.
    ## Episode end
    Terminated after one step.
    ## Arguments
    Those of ``BanditParams`` (num_prompts, num_answers, correct_answers, ...), and seed.
    """

    metadata = {"render_modes": []}

    def __init__(self, seed: int = 0, **params):
        self.task = BanditTask(BanditParams(**params), seed=seed)
        self.observation_space = spaces.Text(max_length=max(map(len, self.task.texts)), charset=charset_for(self.task.texts))
        self.action_space = spaces.Text(max_length=len(str(self.task.params.num_answers)), min_length=1, charset=string.digits)
        self.index = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.index = int(self.np_random.integers(len(self.task)))
        return self.task.texts[self.index], {"problem_id": self.index, "initial_p": float(self.task.initial_p[self.index])}

    def step(self, action):
        k = int(action) if isinstance(action, str) and action.isdigit() else -1
        correct = 0 <= k < self.task.params.num_answers and bool(self.task.correct[self.index, k])
        info = {"problem_id": self.index, "extracted": action, "correct": correct}
        return self.task.texts[self.index], float(correct), True, False, info


class ArenaEnv(ParallelEnv):
    """PettingZoo arena: every agent (a named learner) answers the same prompt each step.

    Observations are the prompt, actions a completion per agent, rewards per agent from
    the verifier. An episode is ``num_steps`` prompts drawn with the env's seed, so all
    agents see an identical prompt stream.
    """

    metadata = {"name": "rlvr_arena_v0", "render_modes": []}

    def __init__(self, agents: list[str], problems: list[Problem], num_steps: int = 8, template: str = "boxed",
                 verify_config: VerifyConfig = VerifyConfig(), max_completion_chars: int = 512):
        if len(set(agents)) != len(agents) or not agents:
            raise ValueError(f"agents must be distinct names, got {agents}")
        self.possible_agents = list(agents)
        self.agents: list[str] = []
        self.problems = problems
        self.prompts = [format_prompt(p, template) for p in problems]
        self.num_steps = num_steps
        self.verify_config = verify_config
        self._obs_space, self._act_space = text_spaces(self.prompts, max_completion_chars)
        self._rng = np.random.default_rng()
        self.index = 0
        self.t = 0

    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent):
        return self._obs_space

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent):
        return self._act_space

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.t = 0
        self.index = int(self._rng.integers(len(self.problems)))
        obs = {a: self.prompts[self.index] for a in self.agents}
        return obs, {a: {"problem_id": self.problems[self.index].id} for a in self.agents}

    def step(self, actions: dict):
        answer = self.problems[self.index].answer
        rewards, infos = {}, {}
        for agent in self.agents:
            v = verify(actions.get(agent, "") if isinstance(actions.get(agent), str) else "", answer, self.verify_config)
            rewards[agent] = v.reward
            infos[agent] = {"problem_id": self.problems[self.index].id, "extracted": v.extracted, "reason": v.reason}
        self.t += 1
        done = self.t >= self.num_steps
        terminations = {a: done for a in self.agents}
        truncations = {a: False for a in self.agents}
        if not done:
            self.index = int(self._rng.integers(len(self.problems)))
        obs = {a: self.prompts[self.index] for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos


gym.register(id="rlvr/Arithmetic-v0", entry_point="rlvr_env.envs:make_arithmetic_env")
gym.register(id="rlvr/MathJsonl-v0", entry_point="rlvr_env.envs:make_jsonl_env")
gym.register(id="rlvr/Bandit-v0", entry_point="rlvr_env.envs:BanditEnv")
