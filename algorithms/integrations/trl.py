"""TRL's ``GRPOTrainer`` with one of our advantage reweighters (HA-DW, F-GRPO focal, A-GRAE, ...).

    from algorithms.integrations.trl import ReweightedGRPOTrainer
    trainer = ReweightedGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...), train_dataset=...,
                                    reweight={"name": "hadw", "lambda_scale": 1.5})

TRL's ``_generate_and_score_completions`` gathers every process's rewards, computes the group
advantages over all of them and keeps this process's slice. This trainer then gathers the
slices back (the same [N] tensor on every process, in TRL's order), applies the reweighter to
the advantages [P, G] and rewards [P, G] (a group = ``num_generations`` consecutive
completions, as TRL builds them) and keeps this process's slice of the result. Every process
computes the same weights and the same belief from the same gathered numbers; nothing else in
TRL's step changes, so every ``loss_type``, several processes and TRL's vLLM modes work as they do
without us (generation and the loss are TRL's).

* Rewards the reweighter sees: TRL's weighted sum of the reward functions (what it logs as
  ``reward``); a completion no reward function scored (all None) counts as 0 there and keeps
  TRL's advantage 0. HA-DW, focal and A-GRAE read them as success rates: use rewards in [0, 1].
* The state (HA-DW's belief) moves once per generation batch in training; evaluation applies
  the current weights and leaves the state where it was.
* Logs: every stat as a TRL metric (``hadw/belief``, ``hadw/eta``, ``hadw/batch_acc``,
  ``phi/correct``, ``phi/incorrect``, ...); the completions table shows the reweighted advantages.
* Checkpoints: ``rlvr_reweighter.pt`` in each ``checkpoint-N``, restored by
  ``trainer.train(resume_from_checkpoint=...)``. The resume is exact when checkpoints fall on
  generation boundaries (``save_steps`` a multiple of ``steps_per_generation * num_iterations``):
  elsewhere TRL itself regenerates on resume, which the uninterrupted run would not have done.

Tested with TRL 1.16 (the ``trl`` extra). The hooks are TRL's own methods (``_calculate_rewards``,
``_generate_and_score_completions``, ``_save_checkpoint``, ``_load_optimizer_and_scheduler``),
overridden as TRL's maintainers advise.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from trl import GRPOTrainer

from algorithms.integrations.common import STATE_FILE, FrameworkReweighter, load_states, save_states, scalar_stats

STATE_KEY = "trl"
"""Key of this trainer's reweighter state in ``rlvr_reweighter.pt``."""


class ReweightMixin:
    """Adds ``reweight=`` to a ``GRPOTrainer`` (or a subclass of it): ``class T(ReweightMixin, MyGRPOTrainer)``.

    Arguments:
        reweight: our reweighter's config, ``{"name": "hadw", "lambda_scale": 1.5}`` or a name
            (``hadw``, ``hadw_window``, ``hadw_fixed``, ``focal``, ``agrae``, ``none``); every
            hyperparameter not given takes its default (``algorithms.REWEIGHTERS``).
        *args, **kwargs: passed to the ``GRPOTrainer``.
    """

    def __init__(self, *args: Any, reweight: Mapping[str, Any] | str, **kwargs: Any):
        self.rlvr_reweight = FrameworkReweighter(reweight, "reweight")
        self._rlvr_rewards_per_func: torch.Tensor | None = None
        super().__init__(*args, **kwargs)

    @property
    def reweighter(self):
        """The reweighter itself (``state_dict()`` holds HA-DW's belief)."""
        return self.rlvr_reweight.reweighter

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list) -> torch.Tensor:
        """TRL's rewards [N, F] of every process (N completions, F reward functions), kept for the reweighter."""
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rlvr_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        """TRL's batch, with ``advantages`` [n] (this process's completions) reweighted."""
        output = super()._generate_and_score_completions(inputs)
        rewards_per_func, self._rlvr_rewards_per_func = self._rlvr_rewards_per_func, None
        if rewards_per_func is None:
            raise RuntimeError("reweight: TRL computed advantages without calling _calculate_rewards; "
                               "this TRL version is not supported (tested: trl 1.16)")
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations
        if mode == "eval":
            group_size = getattr(self, "num_generations_eval", None) or group_size
        local = output["advantages"]  # (n,)
        if local.dim() != 1:
            raise ValueError(f"reweight: expected one advantage per completion, shape [n]; got {tuple(local.shape)}")
        advantages = self.accelerator.gather(local)  # (N,) every process's, in TRL's order
        # TRL's scalar reward per completion: weighted sum of the reward functions, unscored (NaN) -> 0
        weights = self.reward_weights.to(rewards_per_func.device, rewards_per_func.dtype)
        rewards = (rewards_per_func * weights[None, :]).nansum(dim=1).to(advantages.device, advantages.dtype)  # (N,)
        if rewards.numel() != advantages.numel() or advantages.numel() % group_size:
            raise ValueError(f"reweight: {advantages.numel()} advantages and {rewards.numel()} rewards do not form "
                             f"groups of num_generations={group_size}")
        weighted, stats = self.rlvr_reweight(advantages.view(-1, group_size), rewards.view(-1, group_size),
                                             update=mode == "train")  # (P, G)
        weighted = weighted.reshape(-1)  # (N,)
        start = self.accelerator.process_index * local.numel()
        output["advantages"] = weighted[start:start + local.numel()].to(local.dtype)
        for name, value in scalar_stats(stats).items():  # host sync, once per generation batch
            self._metrics[mode][name].append(value)
        self._relog_advantages(weighted)
        return output

    def _relog_advantages(self, weighted: torch.Tensor) -> None:
        """The completions table shows the advantages trained on: replace TRL's last N logged values."""
        logged = self._logs.get("advantages") if isinstance(getattr(self, "_logs", None), dict) else None
        if logged is None:
            return
        k = min(weighted.numel(), len(logged))
        for _ in range(k):
            logged.pop()
        logged.extend(weighted[weighted.numel() - k:].tolist())

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:  # every process holds the same state; the main one writes it
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            step = self.state.global_step
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{step}")
            save_states({STATE_KEY: {**self.rlvr_reweight.state_dict(), "global_step": step}}, folder)

    def _load_optimizer_and_scheduler(self, checkpoint) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        states = load_states(checkpoint)
        if states is None or STATE_KEY not in states:
            warnings.warn(f"reweight: no reweighter state in {checkpoint} (no {STATE_FILE}): the "
                          f"{self.rlvr_reweight.config['name']} reweighter starts from its initial state", stacklevel=2)
            return
        state = states[STATE_KEY]
        self.rlvr_reweight.load_state_dict(state, source=os.path.join(str(checkpoint), STATE_FILE))
        step = state.get("global_step")
        if step is None:
            match = re.search(r"checkpoint-(\d+)$", str(checkpoint).rstrip("/"))
            step = int(match.group(1)) if match else 0
        generate_every = self.args.steps_per_generation * self.num_iterations
        if step % generate_every:
            warnings.warn(f"reweight: {checkpoint} is at step {step}, inside a generation batch of {generate_every} "
                          "steps: TRL regenerates on resume, so the reweighter sees a batch the uninterrupted run "
                          "would not have; save at multiples of steps_per_generation * num_iterations", stacklevel=2)


class ReweightedGRPOTrainer(ReweightMixin, GRPOTrainer):
    """TRL's ``GRPOTrainer`` whose advantages are reweighted by ``reweight`` (see the module doc).

    ``ReweightedGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...), train_dataset=...,
    reweight={"name": "hadw", "lambda_scale": 1.5})``; ``trainer.reweighter.state_dict()`` holds
    the state (HA-DW: ``prior`` = the belief C_t, ``history``, ``count``).
    """
