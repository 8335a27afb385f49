"""Many runs at once: the batched tabular simulator and parallel sweeps (README, "Sweeps").

    BatchedSimulator(configs, draws="runs" | "trainer").run() -> [History] per run
    grid(axes, seeds, base) -> [RunSpec];  run_sweep(specs, workers=2, log_dir=None) -> SweepResult
"""

from experiments.sim.batchable import NotBatchable, batch_key, unbatchable_reason
from experiments.sim.batched import BatchedSimulator
from experiments.sim.history import History
from experiments.sim.sweep import Job, RunResult, RunSpec, SweepResult, grid, plan, run_sweep

__all__ = ["BatchedSimulator", "History", "Job", "NotBatchable", "RunResult", "RunSpec", "SweepResult",
           "batch_key", "grid", "plan", "run_sweep", "unbatchable_reason"]
