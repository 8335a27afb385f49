"""Problem sources and environments for RLVR on math.

``TASKS`` maps an env config name to a problem source class ``Task(params, seed)``.
"""

from algorithms.registry import Registry
from rlvr_env.bandit import BanditParams, BanditTask
from rlvr_env.bank import BUCKETS, PromptBank, bucket_of
from rlvr_env.problems import Problem, ProblemFormatError, arithmetic_problems, format_prompt
from rlvr_env.sources import load_jsonl
from rlvr_env.tasks import ArithmeticParams, ArithmeticTask, CandidateTask, JsonlParams, JsonlTask, MathTask
from rlvr_env.verifier import Verdict, VerifyConfig, extract_answer, verify_here
from rlvr_env.verifier_pool import verify, verify_batch

TASKS = Registry("env", "Task(params, seed): sample_prompts, rewards, bucket")
TASKS.register("bandit", BanditParams)(BanditTask)
TASKS.register("arithmetic", ArithmeticParams)(ArithmeticTask)
TASKS.register("jsonl", JsonlParams)(JsonlTask)

from rlvr_env import envs  # noqa: E402  (registers the Gymnasium ids)

__all__ = [
    "BUCKETS", "TASKS", "ArithmeticParams", "ArithmeticTask", "BanditParams", "BanditTask", "CandidateTask",
    "JsonlParams", "JsonlTask", "MathTask",
    "Problem", "ProblemFormatError", "PromptBank", "Verdict", "VerifyConfig", "arithmetic_problems", "bucket_of",
    "extract_answer", "format_prompt", "load_jsonl", "verify", "verify_batch", "verify_here", "envs",
]
