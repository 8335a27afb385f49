"""Math problems as a training task: prompts, verifier rewards, difficulty buckets.

``CandidateTask`` serves math problems to any policy. A language model answers in free
text; the tabular policy picks one of K candidate answer strings per problem (the
reference and K-1 distractors) and reports the chosen string as its text. Either way the
task reads ``rollout.texts`` and the same verifier scores them. Verdicts are cached per
(problem, text).
"""

from __future__ import annotations

import attrs
import numpy as np
import torch

from algorithms.registry import FieldError, integer, one_of
from policies.base import PromptBatch, Rollout
from rlvr_env.bank import PromptBank
from rlvr_env.problems import ARITHMETIC_LEVELS, TEMPLATES, Problem, arithmetic_problems, format_prompt
from rlvr_env.verifier import VerifyConfig, verify, verify_batch

# Above this many unseen (problem, text) pairs in a step, verify them in worker processes.
BATCH_VERIFY_MIN = 64

# Initial probability of the correct candidate by difficulty level (the tabular "model"
# finds harder problems harder): level 1 easy ... level 5 hard.
LEVEL_SUCCESS = {1: 0.8, 2: 0.6, 3: 0.45, 4: 0.3, 5: 0.15}


def _levels(inst, attribute, value):
    if not value or any(v not in ARITHMETIC_LEVELS for v in value):
        raise FieldError(attribute.name, f"must be levels in {sorted(ARITHMETIC_LEVELS)}, got {list(value)}")


@attrs.frozen
class ArithmeticParams:
    num_problems: int = attrs.field(default=128, validator=integer(1))
    """Problems generated (levels cycle through ``levels``)."""
    levels: tuple[int, ...] = attrs.field(default=(1, 2, 3, 4, 5), converter=tuple, validator=_levels)
    """Difficulty levels: operand digits, number of operations, parentheses."""
    num_answers: int = attrs.field(default=8, validator=integer(2))
    """K candidate answers per problem for the tabular policy (the reference + distractors)."""
    template: str = attrs.field(default="boxed", validator=one_of(*TEMPLATES[:2]))
    """Prompt template: plain | boxed."""
    seed: int | None = None
    """Seed of the problem set (None: the run's seed)."""


def distractors(answer: int, k: int, rng: np.random.Generator) -> list[str]:
    """k distinct wrong integer answers near ``answer`` (off by one, sign, digits, nearby)."""
    pool = [answer + 1, answer - 1, answer + 10, answer - 10, -answer, 2 * answer, answer + 2,
            int(str(abs(answer))[::-1]) * (1 if answer >= 0 else -1)]
    out: list[str] = []
    for v in pool + [answer + int(d) for d in rng.integers(-50, 51, size=4 * k)]:
        s = str(v)
        if v != answer and s not in out:
            out.append(s)
        if len(out) == k:
            return out
    raise RuntimeError("could not build distractors")  # unreachable for k <= 100


class CandidateTask(PromptBank):
    """Math problems with K candidate answers each; rewards from the verifier."""

    name = "arithmetic"

    def __init__(self, problems: list[Problem], num_answers: int, seed: int, template: str = "boxed",
                 verify_config: VerifyConfig = VerifyConfig()):
        self.problems = problems
        self.verify_config = verify_config
        rng = np.random.default_rng(seed)
        candidates: list[list[str]] = []
        for p in problems:
            cands = [p.answer] + distractors(int(p.answer), num_answers - 1, rng)
            candidates.append([cands[i] for i in rng.permutation(num_answers)])
        self._cache: dict[tuple[int, str], float] = {}
        correct = torch.tensor([[self.score(i, c) > 0.5 for c in cands] for i, cands in enumerate(candidates)])
        success = torch.tensor([LEVEL_SUCCESS.get(p.difficulty or 3, 0.45) for p in problems])  # (N,)
        n_correct = correct.sum(1).clamp_min(1)
        mass = torch.where(correct, success[:, None] / n_correct[:, None],
                           (1 - success[:, None]) / (num_answers - n_correct[:, None]))
        super().__init__(tuple(format_prompt(p, template) for p in problems), candidates, correct, mass.log().float(), seed)

    def score(self, index: int, text: str) -> float:
        key = (index, text)
        if key not in self._cache:
            self._cache[key] = verify(text, self.problems[index].answer, self.verify_config).reward
        return self._cache[key]

    def rewards(self, prompts: PromptBatch, rollout: Rollout) -> torch.Tensor:
        """[P, G] verifier rewards of the completions (unseen texts in bulk go to worker processes)."""
        keys = list(zip(rollout.prompt_index.tolist(), rollout.texts))
        unseen = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if len(unseen) >= BATCH_VERIFY_MIN:
            verdicts = verify_batch([t for _, t in unseen], [self.problems[i].answer for i, _ in unseen], self.verify_config)
            self._cache.update({k: v.reward for k, v in zip(unseen, verdicts)})
        r = [self.score(i, t) for i, t in keys]
        return torch.tensor(r).view(len(prompts), rollout.group_size)


class ArithmeticTask(CandidateTask):
    """Seeded arithmetic problems (``rlvr_env.problems.arithmetic_problems``) as a task."""

    def __init__(self, params: ArithmeticParams, seed: int):
        problems = arithmetic_problems(params.num_problems, params.levels, params.seed if params.seed is not None else seed)
        super().__init__(problems, params.num_answers, seed, params.template)
        self.params = params
