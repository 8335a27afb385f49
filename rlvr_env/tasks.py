"""Math problems as training tasks: prompts, verifier rewards, difficulty buckets, held-out splits.

``MathTask`` serves any problem list (a JSONL benchmark) to a language model: rewards are
the verifier's verdicts on ``rollout.texts``, buckets come from the problems' difficulty
levels. ``CandidateTask`` adds K candidate answer strings per problem (the reference and
K-1 distractors) for the tabular policy, which reports the chosen string as its text; the
same verifier scores both, so a language model runs through it unchanged. Each task keeps
``heldout`` problems that training never samples, for evaluation.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import torch

from algorithms.registry import ConfigError, FieldError, integer, one_of
from policies.base import PromptBatch, Rollout
from rlvr_env.bank import PromptBank, PromptSampler
from rlvr_env.datasets import default_data_dir
from rlvr_env.problems import ARITHMETIC_LEVELS, TEMPLATES, Problem, arithmetic_problems, format_prompt, in_held_out_split
from rlvr_env.rewards import (BUILTIN, RewardFunction, RewardFunctionError, RewardParams, RewardScores,
                              build_reward_functions, call, combine, describe_row, row_fields)
from rlvr_env.sources import MAX_ANSWER_CHARS, MAX_ROW_BYTES, check_columns, fit_context, load_problems, without
from rlvr_env.verifier import VerifyConfig
from rlvr_env.verifier_pool import verify, verify_batch

# Above this many unseen (problem, text) pairs in a step, verify them in worker processes.
BATCH_VERIFY_MIN = 64
# Verdict cache bound: language-model completions rarely repeat, so the cache is cleared past this.
CACHE_LIMIT = 200_000
# Difficulty level (1-5) -> bucket: 4-5 hard (0), 3 medium (1), 1-2 easy (2); no level: medium.
LEVEL_BUCKET = {1: 2, 2: 2, 3: 1, 4: 0, 5: 0}

# Initial probability of the correct candidate by difficulty level (the tabular "model"
# finds harder problems harder): level 1 easy ... level 5 hard.
LEVEL_SUCCESS = {1: 0.8, 2: 0.6, 3: 0.45, 4: 0.3, 5: 0.15}


def _levels(inst, attribute, value):
    if not value or any(v not in ARITHMETIC_LEVELS for v in value):
        raise FieldError(attribute.name, f"must be levels in {sorted(ARITHMETIC_LEVELS)}, got {list(value)}")


@attrs.frozen
class ArithmeticParams(RewardParams):
    num_problems: int = attrs.field(default=128, validator=integer(1))
    """Problems generated (levels cycle through ``levels``)."""
    levels: tuple[int, ...] = attrs.field(default=(1, 2, 3, 4, 5), converter=tuple, validator=_levels)
    """Difficulty levels: operand digits, number of operations, parentheses."""
    num_answers: int = attrs.field(default=8, validator=integer(2))
    """K candidate answers per problem for the tabular policy (the reference + distractors)."""
    template: str = attrs.field(default="boxed", validator=one_of("plain", "boxed", "scratchpad"))
    """Prompt template: plain | boxed | scratchpad (write each intermediate result, then the box:
    ``env=arithmetic_scratchpad``)."""
    heldout: int = attrs.field(default=100, validator=integer(0))
    """Further problems of the same levels kept out of training for evaluation: from the hash split
    that warm starts never see (``in_held_out_split``), no training question repeated."""
    seed: int | None = None
    """Seed of the problem set (None: the run's seed)."""


def _heldout(inst, attribute, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (isinstance(value, float) and value >= 1):
        raise FieldError(attribute.name, f"must be a count >= 0 or a fraction in [0, 1), got {value!r}")


def _max_prompt_tokens(inst, attribute, value):
    if value is None or value == "filter":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FieldError(attribute.name, f"must be null (refuse prompts over the model's context), filter (drop them) "
                                         f"or a count >= 1 (drop prompts of more tokens), got {value!r}")


@attrs.frozen
class JsonlParams(RewardParams):
    path: str | None = None
    """The problems: a JSONL file, a Parquet file (.parquet) or a folder written by Hugging Face
    ``Dataset.save_to_disk`` (relative paths are read from ``data_dir``)."""
    data_dir: str | None = None
    """Folder of the benchmark files (None: ``rlvr_env.datasets.default_data_dir()``: RLVR_DATA_DIR,
    else ../shared/data beside the project checkout)."""
    heldout: int | float = attrs.field(default=0.1, validator=_heldout)
    """Problems kept out of training for evaluation: a count, or a fraction in [0, 1) of the unique problems."""
    heldout_path: str | None = None
    """A separate held-out file instead (e.g. gsm8k_test beside gsm8k_train); ``heldout`` then ignored,
    and training rows that are also held out are dropped."""
    limit: int | None = attrs.field(default=None, validator=attrs.validators.optional(integer(1)))
    """Read at most this many (unique) problems of ``path``."""
    template: str = attrs.field(default="boxed", validator=one_of(*TEMPLATES[:2]))
    """Prompt template: plain | boxed (a language model's chat template is applied by the policy)."""
    seed: int | None = None
    """Seed of the held-out split (None: the run's seed)."""
    columns: dict | None = attrs.field(default=None, converter=check_columns)
    """Our names -> the file's columns, e.g. {prompt: q, answer: final} (level, id optional); every
    other column goes to Problem.metadata as it is. None: rows in the known formats (problem +
    answer, question + answer "... #### N")."""
    max_answer_chars: int = attrs.field(default=MAX_ANSWER_CHARS, validator=integer(1))
    """Longer reference answers are refused, naming the row (the verifier refuses longer extracted answers)."""
    max_row_bytes: int = attrs.field(default=MAX_ROW_BYTES, validator=integer(1))
    """Larger rows are refused before they are parsed, naming the row."""
    max_prompt_tokens: int | str | None = attrs.field(default=None, validator=_max_prompt_tokens)
    """Prompts over the model's context (prompt tokens + policy.max_new_tokens > max_position_embeddings):
    null refuses them, naming the first; filter drops them with a count; N drops prompts of more than
    N tokens. The tabular policy: no check."""


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


class VerifiedRewards:
    """Rewards of ``rollout.texts`` by the verifier against ``problems[i].answer``, cached per
    (problem, text); a step's unseen texts go to worker processes in bulk. ``rewards`` is the
    verifier's verdict (what evaluation reads); ``reward_scores`` the training reward of the
    task's reward functions (``rlvr_env.rewards``; the verifier alone by default)."""

    problems: list[Problem]
    verify_config: VerifyConfig
    _cache: dict[tuple[int, str], float]
    reward_functions: tuple[RewardFunction, ...]

    def _init_rewards(self, params: RewardParams) -> None:
        self._cache = {}
        self.reward_functions = build_reward_functions(params, row_fields(self.problems))

    def reward_scores(self, prompts: PromptBatch, rollout: Rollout) -> RewardScores:
        """The training rewards: [P, G] sum_i w_i * r_i of the reward functions (NaN where none
        scored), and each function's [P, G] values. Raises ``RewardFunctionError`` naming the
        function and the row when one fails."""
        functions = self.reward_functions
        if len(functions) == 1 and functions[0].builtin and functions[0].weight == 1.0:  # the default: as before
            r = self.verdicts(prompts, rollout)
            return RewardScores(r, {functions[0].name: r})
        shape = (len(prompts), rollout.group_size)
        kwargs, rows = None, None
        values: dict[str, torch.Tensor] = {}
        for f in functions:
            if f.builtin:
                values[f.name] = self.verdicts(prompts, rollout).to(torch.float64)
                continue
            if kwargs is None:
                kwargs, rows = self.row_fields(rollout)
            values[f.name] = torch.tensor(call(f, kwargs, rows), dtype=torch.float64).view(shape)
        total = combine(values, {f.name: f.weight for f in functions})
        return RewardScores(total.float(), {k: v.float() for k, v in values.items()})

    def verdicts(self, prompts: PromptBatch, rollout: Rollout) -> torch.Tensor:
        """``rewards``, refused when not finite (NaN would read as unscorable: only None says that)."""
        r = self.rewards(prompts, rollout)
        bad = ~torch.isfinite(r)
        if bad.any():
            b = int(bad.view(-1).nonzero()[0])
            problem = self.problems[int(rollout.prompt_index[b])]
            raise RewardFunctionError(f"reward function {BUILTIN}: {int(bad.sum())} non-finite reward(s), the first "
                                      f"{float(r.view(-1)[b])} for completion {b} (row: "
                                      f"{describe_row(problem, problem.prompt)})")
        return r

    def row_fields(self, rollout: Rollout) -> tuple[dict[str, list], list[str]]:
        """The keyword lists a reward function gets ([B] each, aligned with ``rollout.texts``:
        ``rlvr_env.rewards.ROW_FIELDS`` and every metadata column; a row without one: None),
        and each completion's row as an error names it."""
        index = rollout.prompt_index.tolist()
        problems = [self.problems[i] for i in index]
        kwargs: dict[str, list] = {
            "prompts": [self.texts[i] for i in index],
            "completions": list(rollout.texts),
            "answer": [p.answer for p in problems],
            "problem": [p.prompt for p in problems],
            "problem_id": [p.id for p in problems],
            "difficulty": [p.difficulty for p in problems],
        }
        for key in row_fields(problems)[len(kwargs):]:
            kwargs[key] = [p.metadata.get(key) for p in problems]
        return kwargs, [describe_row(p, p.prompt) for p in problems]

    def score(self, index: int, text: str) -> float:
        key = (index, text)
        if key not in self._cache:
            self._remember({key: verify(text, self.problems[index].answer, self.verify_config).reward})
        return self._cache[key]

    def rewards(self, prompts: PromptBatch, rollout: Rollout) -> torch.Tensor:
        """[P, G] verifier rewards of the completions."""
        keys = list(zip(rollout.prompt_index.tolist(), rollout.texts))
        unseen = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if len(unseen) >= BATCH_VERIFY_MIN:
            verdicts = verify_batch([t for _, t in unseen], [self.problems[i].answer for i, _ in unseen], self.verify_config)
            self._remember({k: v.reward for k, v in zip(unseen, verdicts)})
        r = [self.score(i, t) for i, t in keys]
        return torch.tensor(r).view(len(prompts), rollout.group_size)

    def _remember(self, verdicts: dict[tuple[int, str], float]) -> None:
        if len(self._cache) + len(verdicts) > CACHE_LIMIT:
            self._cache.clear()
        self._cache.update(verdicts)


class MathTask(VerifiedRewards, PromptSampler):
    """Free-text math problems for a language model: verifier rewards, buckets by level.

    Args:
        problems: training problems; heldout: problems for evaluation only.
    """

    def __init__(self, problems: list[Problem], heldout: list[Problem], seed: int, template: str = "boxed",
                 verify_config: VerifyConfig = VerifyConfig(), name: str = "math", rewards: RewardParams = RewardParams()):
        self.name = name
        self.problems = problems
        self.heldout = heldout
        self.verify_config = verify_config
        self._init_rewards(rewards)
        buckets = torch.tensor([LEVEL_BUCKET.get(p.difficulty, 1) for p in problems], dtype=torch.long)
        super().__init__(tuple(format_prompt(p, template) for p in problems), buckets, seed)


def split_heldout(problems: list[Problem], heldout: int | float, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(train, held-out): a seeded random ``heldout`` count or fraction of the unique problems
    (normalised text, ``rlvr_env.sources.normalised``): no training problem equals a held-out one.
    Without repeats (the loaders drop them) this is a permutation of ``problems`` as they are."""
    from rlvr_env.sources import normalised

    seen: set[str] = set()
    problems = [p for p in problems if not (normalised(p.prompt) in seen or seen.add(normalised(p.prompt)))]
    count = int(round(heldout * len(problems))) if isinstance(heldout, float) else heldout
    if count >= len(problems):
        raise ConfigError(f"env.heldout: {heldout} leaves no training problems out of {len(problems)}")
    order = np.random.default_rng(seed).permutation(len(problems))
    held = set(order[:count].tolist())
    return [p for i, p in enumerate(problems) if i not in held], [problems[i] for i in sorted(held)]


def resolve_data_file(path: str, data_dir: str | None, field: str) -> Path:
    """``path`` as given, or inside ``data_dir`` (None: ``default_data_dir()``); a clear error
    naming the missing file."""
    data_dir = default_data_dir() if data_dir is None else data_dir
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and not candidate.exists():
        candidate = Path(data_dir).expanduser() / path
    if not candidate.exists():
        raise ConfigError(f"{field}: no such file {candidate} (data folder {Path(data_dir).resolve()}: env.data_dir, "
                          "else the RLVR_DATA_DIR environment variable, else ../shared/data beside the project "
                          "checkout); point one of them at the folder holding the benchmark JSONL files, or give "
                          "an absolute path (a .jsonl or .parquet file, or a datasets folder)")
    return candidate


class JsonlTask(MathTask):
    """A problem file as a training task: a JSONL benchmark (MATH500, GSM8K, AIME, AMC, Minerva,
    OlympiadBench), any file in those formats, or any JSONL / Parquet / datasets folder with
    ``env.columns`` (``rlvr_env.sources.load_problems``: checked, exact duplicates dropped)."""

    def __init__(self, params: JsonlParams, seed: int):
        if params.path is None:
            raise ConfigError("env.path: missing; give the JSONL file, e.g. env=jsonl env.path=/data/train.jsonl "
                              "(or use a preset: env=math500, env=gsm8k, ...)")
        path = resolve_data_file(params.path, params.data_dir, "env.path")
        checks = {"columns": params.columns, "max_answer_chars": params.max_answer_chars,
                  "max_row_bytes": params.max_row_bytes}
        problems = load_problems(path, limit=params.limit, **checks)
        split_seed = params.seed if params.seed is not None else seed
        if params.heldout_path is not None:
            held = load_problems(resolve_data_file(params.heldout_path, params.data_dir, "env.heldout_path"), **checks)
            train = without(problems, held, "env.heldout_path")
            if not train:
                raise ConfigError(f"env.heldout_path: every problem of {path} is also held out")
        else:
            train, held = split_heldout(problems, params.heldout, split_seed)
        self.params, self.seed = params, seed
        super().__init__(train, held, seed, params.template, name=path.stem if path.is_file() else path.name,
                         rewards=params)

    def fit_context(self, policy) -> JsonlTask:
        """Refuse (or with ``env.max_prompt_tokens``, drop) the problems whose prompts do not fit the
        policy's context with its generation budget (before anything is written); the tabular
        policy has no context and keeps them all."""
        p = self.params
        train = fit_context(self.problems, p.template, policy, p.max_prompt_tokens, "training")
        held = fit_context(self.heldout, p.template, policy, p.max_prompt_tokens, "held-out")
        if len(train) < len(self.problems) or len(held) < len(self.heldout):
            MathTask.__init__(self, train, held, self.seed, p.template, name=self.name, rewards=p)
        return self


class CandidateTask(VerifiedRewards, PromptBank):
    """Math problems with K candidate answers each; rewards from the verifier."""

    name = "arithmetic"

    def __init__(self, problems: list[Problem], num_answers: int, seed: int, template: str = "boxed",
                 verify_config: VerifyConfig = VerifyConfig(), heldout: list[Problem] = (),
                 rewards: RewardParams = RewardParams()):
        self.problems = problems
        self.heldout = list(heldout)
        self.verify_config = verify_config
        self._init_rewards(rewards)
        rng = np.random.default_rng(seed)
        candidates: list[list[str]] = []
        for p in problems:
            cands = [p.answer] + distractors(int(p.answer), num_answers - 1, rng)
            candidates.append([cands[i] for i in rng.permutation(num_answers)])
        # The reference and other integers: correct is the reference string itself (what the
        # verifier says too, tests/test_jsonl_tasks.py; it scores the texts at training time).
        correct = torch.tensor([[c == p.answer for c in cands] for p, cands in zip(problems, candidates)])
        success = torch.tensor([LEVEL_SUCCESS.get(p.difficulty or 3, 0.45) for p in problems])  # (N,)
        n_correct = correct.sum(1).clamp_min(1)
        mass = torch.where(correct, success[:, None] / n_correct[:, None],
                           (1 - success[:, None]) / (num_answers - n_correct[:, None]))
        super().__init__(tuple(format_prompt(p, template) for p in problems), candidates, correct, mass.log().float(), seed)


class ArithmeticTask(CandidateTask):
    """Seeded arithmetic problems (``rlvr_env.problems.arithmetic_problems``) as a task."""

    def __init__(self, params: ArithmeticParams, seed: int):
        # One prefix-stable stream, split by a hash of the question (``in_held_out_split``): one
        # question in 4 is evaluation-only, for every policy and for the warm starts, so that a
        # large training set cannot use up a level's held-out questions (level 1 has only 243).
        # Training problems do not depend on ``heldout``; held-out ones are distinct questions.
        stream, size = params.seed if params.seed is not None else seed, 2 * (params.num_problems + 4 * params.heldout)
        heldout: list[Problem] = []
        while True:  # a longer stream starts with the same problems: grow it until both parts are full
            both = arithmetic_problems(size, params.levels, stream)
            train = [p for p in both if not in_held_out_split(p.prompt)][: params.num_problems]
            distinct: dict[str, Problem] = {}
            for p in both:
                if in_held_out_split(p.prompt):
                    distinct.setdefault(p.prompt, p)
            # Level 1 has 243 questions in all: stop growing once a doubling finds no new one.
            found, heldout = len(heldout), list(distinct.values())[: params.heldout]
            if len(train) == params.num_problems and (len(heldout) == params.heldout or len(heldout) == found):
                break
            size *= 2
        # Levels interleaved, so that the first M held-out problems (eval.max_problems) span them all.
        rank = {id(p): sum(q.difficulty == p.difficulty for q in heldout[:i]) for i, p in enumerate(heldout)}
        heldout.sort(key=lambda p: (rank[id(p)], p.difficulty))
        super().__init__(train, params.num_answers, seed, params.template, heldout=heldout, rewards=params)
        self.params = params
