"""``train.*``: the training loop's settings (``TrainParams``), read by ``Trainer``."""

from __future__ import annotations

import attrs

from algorithms.registry import each_of, integer, one_of


@attrs.frozen
class TrainParams:
    steps: int = attrs.field(default=200, validator=integer(1))
    """Number of training steps (one rollout batch each)."""
    prompts_per_step: int = attrs.field(default=64, validator=integer(1))
    """P: prompts per step."""
    group_size: int = attrs.field(default=8, validator=integer(2))
    """G: responses sampled per prompt (a group needs at least 2)."""
    ppo_epochs: int = attrs.field(default=1, validator=integer(1))
    """Passes over each rollout batch."""
    minibatches: int = attrs.field(default=1, validator=integer(1))
    """Optimizer steps per epoch (the batch of P * G responses is split evenly; at most one per response)."""
    micro_batch_size: int | None = attrs.field(default=None, validator=attrs.validators.optional(integer(1)))
    """Responses per forward/backward pass (gradient accumulation); None: the whole minibatch.
    The gradient is the same either way: aggregation divides by the minibatch's totals."""
    checkpoint_every: int = attrs.field(default=50, validator=integer(0))
    """Save a checkpoint every N steps and at the end (0: only at the end)."""
    keep_checkpoints: int = attrs.field(default=2, validator=integer(1))
    """How many recent checkpoints to keep."""
    log_dir: str = "runs"
    """Parent folder of run directories (one per run)."""
    run_name: str | None = attrs.field(default=None, converter=attrs.converters.optional(str))
    """Run directory name (default: <algo>-<env>-s<seed>-<time>); text whatever YAML makes of it (123, nan)."""
    on_nonfinite: str = attrs.field(default="stop", validator=one_of("stop", "skip"))
    """A NaN / inf loss or gradient norm: ``stop`` the run (``error: step N: non-finite ...``, the last
    good checkpoint kept, nothing exported), or ``skip`` that optimizer update (counted in
    ``train/skipped_updates``) and stop after ``max_skipped_in_a_row`` such steps. Non-finite
    weights always stop the run."""
    max_skipped_in_a_row: int = attrs.field(default=3, validator=integer(1))
    """``on_nonfinite=skip``: steps in a row with a dropped update before the run stops."""
    progress: bool = True
    """Show a progress bar."""
    eval_every: int = attrs.field(default=0, validator=integer(0))
    """Evaluate on the env's held-out problems every N steps (``eval.*`` settings; also at step 0 and before the last update) and log
    ``eval/*`` (0: never). The tabular policy is evaluated on its own prompts."""
    samples_every: int = attrs.field(default=10, validator=integer(0))
    """Every N steps write a few sampled completions (TensorBoard text) and the reweighting
    weights (histogram); 0: never."""
    samples_shown: int = attrs.field(default=4, validator=integer(1))
    """Completions written each time (the first response of as many groups)."""
    loggers: tuple[str, ...] = attrs.field(default=("tensorboard",), converter=tuple, validator=each_of("tensorboard", "wandb"))
    """Where the run logs: ``tensorboard`` (event files), ``wandb`` (Weights & Biases, offline unless
    ``WANDB_MODE`` is set; the ``wandb`` extra), or both."""
