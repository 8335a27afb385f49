"""Problem sources and environments for RLVR on math.

``TASKS`` maps an env config name to a problem source class ``Task(params, seed)``.
"""

from algorithms.registry import Registry
from rlvr_env.bandit import BUCKETS, BanditParams, BanditTask, bucket_of

TASKS = Registry("env", "Task(params, seed): sample_prompts, rewards, bucket")
TASKS.register("bandit", BanditParams)(BanditTask)

__all__ = ["BUCKETS", "TASKS", "BanditParams", "BanditTask", "bucket_of"]
