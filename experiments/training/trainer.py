"""The training loop. It reads top to bottom like the pipeline of DESIGN.md:

    prompts -> policy.sample -> task.rewards -> advantage -> reweighter
            -> for each epoch / minibatch / micro-batch: logprobs -> loss -> aggregate -> backward
               engine.step per minibatch; policy.sync_sampler after the update
            -> metrics (one host sync per step)

It does not know which policy backend, task or algorithm it drives: it sees the typed
``Task`` (plus ``ExactTask`` where exact success probabilities exist, decided once at build
time), the ``Policy`` protocol and an ``Engine`` (which owns the optimizer).
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from algorithms import Algorithm, ConfigError
from experiments.training import metrics as M
from experiments.training.checkpoint import save_checkpoint
from experiments.training.guards import (InterruptGuard, Interrupted, NonFiniteError, RewardFunctionStopped,
                                        check_rewards, check_update)
from experiments.parallel.engine import Engine
from experiments.training.params import TrainParams
from experiments.training.groups import LocalGroups, StepGroups, fill_unscorable, scorable_advantage
from policies.base import Policy, PromptBatch, Rollout
from policies.files import atomic_folder, stale_temporaries
from rlvr_env.protocol import ExactTask, Task
from rlvr_env.rewards import RewardFunctionError


class Trainer:
    """Owns the stateful parts of a run: policy, engine (optimizer), reweighter, RNGs, step.

    ``exact`` is the task as an ``ExactTask`` when exact success probabilities exist for this
    policy (``rlvr_env.protocol.exact_view``), else None. ``evaluator`` is an optional
    held-out evaluation (``experiments.evaluation.evaluator.PeriodicEval``): ``every`` and a
    call ``(policy) -> metrics`` that leaves the training RNGs alone. ``logger`` receives the
    metrics (None: none written). ``prompt_source`` ``(num) -> PromptBatch`` replaces the
    task's own draw of each step's first round (an arena's shared prompt stream)."""

    def __init__(self, params: TrainParams, task: Task, policy: Policy, engine: Engine, algorithm: Algorithm,
                 max_grad_norm: float | None, seed: int, run_dir: Path, logger=None, exact: ExactTask | None = None,
                 evaluator: Callable | None = None, prompt_source: Callable[[int], PromptBatch] | None = None):
        self.params = params
        self.task = task
        self.levels = M.problem_levels(task)  # [N] each problem's level (None: no levels), for response/length_level{k}
        self.exact = exact
        self.evaluator = evaluator
        self.policy = policy
        self.engine = engine
        self.algo = algorithm
        self.max_grad_norm = max_grad_norm
        self.run_dir = Path(run_dir)
        self.logger = logger
        self.prompt_source = prompt_source
        self.generator = torch.Generator().manual_seed(process_seed(seed, engine.rank))  # sampling, minibatch order
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.skipped_in_a_row = 0  # steps with a dropped (non-finite) update, in a row
        self.config: dict | None = None  # the run's config, recorded in each checkpoint (set by the lifecycle)
        self._p_exact: torch.Tensor | None = None  # [N] exact p of every prompt under the current policy
        self.old_logp_from_update = self.defer_old_logp()

    def defer_old_logp(self) -> bool:
        """One optimizer step, one pass, over the sampled batch itself (no filter, no micro-batches): a
        policy whose ``old_logp`` is that pass (``HFPolicy.defer_old_logp``: recompute, float32) skips
        it at sampling and the update takes its own detached log-probs, bit for bit the same."""
        t, defer = self.params, getattr(self.policy, "defer_old_logp", None)  # optional protocol
        one_pass = t.micro_batch_size is None or t.micro_batch_size >= t.prompts_per_step * t.group_size
        same_rows = one_pass and getattr(self.algo.filter, "keeps_every_group", False)
        if defer is None or not defer(t.ppo_epochs * t.minibatches == 1 and same_rows):  # also: undo another's
            return False
        if self.engine.is_main:
            print("old_logp: one optimizer step per batch in float32: the update's own log-probs are the ratio's "
                  "denominator; the recompute pass at sampling is skipped", file=sys.stderr)
        return True

    # ------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        """One step; returns its metrics (the history keeps all but the wall-clock ``time/*``
        and ``speed/*`` ones, so that equal seeds give equal histories)."""
        held_out, timing = self.evaluate()  # the policy that samples this step, like accuracy/batch
        groups, local, seconds = self.collect()  # every group sampled this step (several rounds with a filter)
        timing.update(seconds)
        rewards = self.algo.shape(groups.rewards, groups.lengths)  # (N, G)
        scored = groups.scored
        if scored is None:  # every response scored
            advantages = self.algo.advantage(rewards)  # (N, G)
            weighted, reweight_stats = self.algo.reweighter(advantages, rewards)  # (N, G)
        else:  # unscorable responses: advantage 0, outside their group's baseline
            advantages = scorable_advantage(self.algo.advantage, rewards, scored)
            weighted, reweight_stats = self.algo.reweighter(advantages, fill_unscorable(rewards, scored))
            weighted = weighted.masked_fill(~scored, 0.0)
        start = time.perf_counter()
        loss_stats = self.update(local.training_rollout(groups, weighted), num_groups=int(groups.train.sum()))
        self.policy.sync_sampler()  # new weights into a separate generation engine, if any
        timing["time/update_s"] = time.perf_counter() - start

        raw = groups.rewards if scored is None else fill_unscorable(groups.rewards, scored)
        metrics = M.group_metrics(raw, advantages, weighted, groups.buckets, groups.p_true, scored)
        metrics.update(M.function_rewards(groups.by_function, groups.rewards))
        metrics.update(groups.stats)
        metrics.update(reweight_stats)
        metrics.update(self.engine.reduce_metrics({**loss_stats, **M.response_metrics(local.rollout),
                                                   **M.level_lengths(local.rollout, self.levels)},
                                                  sum_keys=(M.LOSS,)))  # per process -> all of them
        metrics.update(held_out)
        bad_weights, num_weights = self.engine.nonfinite_weights()
        metrics["_nonfinite_weights"] = bad_weights  # checked below, after the step's one host sync
        if self.engine.world_size > 1:
            metrics["processes/state_diff"] = self.check_replicas()
        if self.exact is not None:
            self._p_exact = self.exact.success_probability(self.policy)  # the updated policy: these metrics, next step's p
            metrics.update(M.exact_accuracy(self._p_exact, self.exact.buckets))
            metrics.update(self.exact.policy_metrics(self.policy))
        values = M.to_host(metrics)  # the one host sync of the step
        self.check_finite(values, int(values.pop("_nonfinite_weights")), num_weights)
        self.step += 1
        self.history.append(values)
        values = {**values, **M.speed_metrics(timing, groups.lengths)}
        if self.logger is not None:
            self.log(values, local, groups, advantages, weighted)
        return values

    def log(self, values: dict[str, float], local: LocalGroups, groups: StepGroups, advantages: torch.Tensor,
            weighted: torch.Tensor) -> None:
        """The step's scalars; every ``samples_every`` steps also sampled completions and the
        reweighting weights' histogram."""
        self.logger.log(self.step, values)
        if self.params.samples_every and self.step % self.params.samples_every == 0:
            self.logger.log_samples(self.step, local.prompts, local.rollout, groups.rewards[local.index],
                                    self.params.samples_shown)
            self.logger.log_histogram(self.step, "reweight/weights", M.reweight_weights(advantages, weighted))

    def check_replicas(self) -> torch.Tensor:
        """Several processes: the reweighter state (HA-DW belief, ...) and, for replicas, the
        weights must be the same on every process after each step; they are computed from the
        same gathered rewards and the same summed gradients. Returns the largest difference to
        the main process (0); a difference stops the run instead of training diverged replicas."""
        state = [torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in self.algo.reweighter.state_dict().values()]
        diff = self.engine.replica_difference(torch.cat(state) if state else torch.zeros(0, dtype=torch.float64))
        if diff > 0:
            raise RuntimeError(f"step {self.step + 1}: the processes' states differ (max difference {float(diff):.3g}): "
                               "reweighter state and weights must be identical replicas; a process sampled or "
                               "updated differently (different code, config or data on some process?)")
        return diff.float()

    def evaluate(self) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Held-out metrics of the current policy when due (step 0, every ``evaluator.every``
        steps, and before the last update), and their wall time; else nothing."""
        ev = self.evaluator
        if ev is None or not (self.step % ev.every == 0 or self.step + 1 == self.params.steps):
            return {}, {}
        with self.engine.full_weights():  # every process enters (sharded weights are gathered)
            if not self.engine.is_main:  # the main process evaluates (it alone writes); the others go on
                return {}, {}
            start = time.perf_counter()
            metrics = ev(self.policy)
        return metrics, {"time/eval_s": time.perf_counter() - start}

    def exact_p(self, index: torch.Tensor) -> torch.Tensor:
        """[n] exact success probabilities of prompts ``index`` under the current policy."""
        if self._p_exact is None:
            self._p_exact = self.exact.success_probability(self.policy)
        return self._p_exact[index]

    def collect(self) -> tuple[StepGroups, LocalGroups, dict[str, float]]:
        """Sample P prompts x G responses and score them; with a filter, sample more rounds
        (up to ``filter.max_extra_rounds``) until P groups pass, then keep the first P. Each
        process samples and scores its share of the prompts (all of them on one process).
        Returns every process's groups, this process's, and the seconds spent sampling and scoring."""
        t, engine = self.params, self.engine
        seconds = {"time/sample_s": 0.0, "time/reward_s": 0.0}
        rounds: list[tuple] = []
        passed = 0
        for round_ in range(1 + self.algo.filter.max_extra_rounds):
            shared = self.prompt_source is not None and round_ == 0  # extra filter rounds draw privately
            prompts = self.prompt_source(t.prompts_per_step) if shared else self.task.sample_prompts(t.prompts_per_step)
            p_true = self.exact_p(prompts.index) if self.exact is not None else None  # exact p before sampling
            mine = engine.shard(len(prompts))  # this process's groups of the round
            local = prompts.select(mine)
            start = time.perf_counter()
            with engine.full_weights():  # processes sample different numbers of tokens
                rollout = self.policy.sample(local, t.group_size, self.generator)  # B = P_local * G responses
            scored = time.perf_counter()
            raw, by_function = self.score(local, rollout)  # (P, G), every process's groups
            lengths = engine.gather(rollout.mask.sum(dim=1).view(len(local), t.group_size))  # (P, G)
            seconds["time/sample_s"] += scored - start
            seconds["time/reward_s"] += time.perf_counter() - scored
            check_rewards(raw, self.step + 1, unscorable=bool(by_function))
            found = ~torch.isnan(raw)
            keep = self.algo.filter.keep(raw if found.all() else fill_unscorable(raw, found))  # (P,)
            index = torch.arange(mine.start, mine.stop) + len(prompts) * round_  # (P_local,) indices into the N
            rounds.append((prompts, local, rollout, raw, lengths, p_true, keep, index, by_function))
            if self.algo.filter.max_extra_rounds == 0:
                break
            passed += int(keep.sum())  # rewards live on the host: no device sync
            if passed >= t.prompts_per_step:
                break
        prompts, local, rollout, raw, lengths, p_true, keep, index, by_function = zip(*rounds)
        keep = torch.cat(keep)  # (N,)
        train = torch.zeros_like(keep)
        train[keep.nonzero().squeeze(1)[: t.prompts_per_step]] = True
        stats = {
            "sampling/rounds": torch.tensor(float(len(rounds))),
            "sampling/dropped_groups": (~keep).sum().float(),
            "sampling/train_groups": train.sum().float(),
        }
        raw = torch.cat(raw)
        present = ~torch.isnan(raw)  # scored responses
        groups = StepGroups(rewards=raw, lengths=torch.cat(lengths),
                            buckets=self.task.bucket(PromptBatch.concat(list(prompts))),
                            p_true=torch.cat(p_true) if self.exact is not None else None, train=train, stats=stats,
                            scored=None if present.all() else present,
                            by_function={k: torch.cat([b[k] for b in by_function]) for k in by_function[0]})
        return groups, LocalGroups(torch.cat(index), PromptBatch.concat(list(local)), Rollout.concat(list(rollout))), seconds

    def score(self, prompts: PromptBatch, rollout: Rollout) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Every process's [P, G] training rewards (NaN: unscorable) and each reward function's
        values, gathered in one collective: ``task.reward_scores`` where the task has reward
        functions (``rlvr_env.rewards``), else ``task.rewards`` (and no functions). A reward function
        that fails on any process stops every process (``RewardFunctionStopped``)."""
        scorer = getattr(self.task, "reward_scores", None)
        if scorer is None:
            return self.engine.gather(self.task.rewards(prompts, rollout)), {}
        names = [f.name for f in self.task.reward_functions]
        shape, step, engine = (len(prompts), rollout.group_size), self.step + 1, self.engine
        failure = None
        try:
            scores = scorer(prompts, rollout)
            columns = [scores.total, *(scores.by_function[k] for k in names), torch.zeros(shape)]
        except RewardFunctionError as exc:
            if engine.world_size == 1:
                raise RewardFunctionStopped(f"step {step}: {exc}") from None
            failure = f"step {step}: {exc}"
            columns = [torch.zeros(shape)] * (1 + len(names)) + [torch.full(shape, float(engine.rank + 1))]
        stacked = engine.gather(torch.stack([c.float() for c in columns], -1))  # (P, G, 2 + F)
        failed = stacked[..., -1].amax()
        if failed > 0:  # the same on every process: all stop after the same collective
            if failure is not None:
                if not engine.is_main:  # the main process alone prints the error line: say it here too
                    print(f"error: process {engine.rank}: {failure}", file=sys.stderr, flush=True)
                raise RewardFunctionStopped(failure)
            raise RewardFunctionStopped(f"step {step}: a reward function failed on process {int(failed) - 1} "
                                        "(its error is printed above)")
        return stacked[..., 0], {k: stacked[..., 1 + i] for i, k in enumerate(names)}

    def update(self, rollout: Rollout, num_groups: int | None = None) -> dict[str, torch.Tensor]:
        """PPO-style epochs over minibatches of ``rollout`` (advantages set); one engine step
        per minibatch, gradients accumulated over its micro-batches. Returns mean loss stats.

        ``num_groups``: groups in the update over all processes (default: this rollout's); every
        process runs as many minibatches (some possibly empty here), so that the engine's
        collectives (totals, gradient sum) line up."""
        batch = len(rollout)
        total = batch if num_groups is None else num_groups * self.params.group_size  # responses, all processes
        if total == 0:  # every group was filtered out: nothing to learn from this step
            return {}
        if self.algo.kl_beta > 0 and batch:  # once per step, not per minibatch and epoch
            with torch.no_grad():
                rollout = rollout.with_(ref_logp=self.policy.ref_logprobs(rollout))
        size = math.ceil(total / min(self.params.minibatches, total))
        num_minibatches = math.ceil(total / size)  # as many as torch.chunk makes of the whole batch
        collected: dict[str, list[torch.Tensor]] = {}
        for _ in range(self.params.ppo_epochs):
            order = torch.randperm(batch, generator=self.generator)
            parts = list(order.chunk(num_minibatches)) if batch else []
            for index in parts + [order[:0]] * (num_minibatches - len(parts)):
                mb = rollout.select(index)
                totals = self.engine.totals(mb.mask)  # counts of the whole minibatch, all processes
                loss = torch.zeros(())
                # a process may hold none of a minibatch: no backward then, but it takes part in the step
                for part, last in self.engine.micro_batches(mb, self.params.micro_batch_size):
                    logp = self.policy.logprobs(part)  # (b, T) on the policy's device
                    part = part.to(logp.device)
                    if self.old_logp_from_update:  # on the sampling weights: what recompute would give
                        part = part.with_(old_logp=logp.detach())
                    part_loss, stats = self.algo.objective(logp, part, totals)
                    self.engine.backward(part_loss, sync=last)
                    loss = loss + part_loss.detach()
                    for key, v in stats.items():
                        collected.setdefault(f"loss/{key}", []).append(v.detach())
                grad_norm = self.engine.step(self.max_grad_norm, loss)  # non-finite: not applied
                collected.setdefault(M.LOSS, []).append(loss.to(grad_norm.device))  # CPU zero where no rows here
                collected.setdefault(M.GRAD_NORM, []).append(grad_norm)
                collected.setdefault(M.SKIPPED_UPDATES, []).append((~torch.isfinite(grad_norm)).float())
        stats = {k: torch.stack(v).mean() for k, v in collected.items()}
        stats[M.SKIPPED_UPDATES] = torch.stack(collected[M.SKIPPED_UPDATES]).sum()
        return stats

    def check_finite(self, values: dict[str, float], bad_weights: int, num_weights: int) -> None:
        """The non-finite guard (``train.on_nonfinite``), after the step's metrics reached the host."""
        skip = self.params.on_nonfinite == "skip"
        check_update(values, bad_weights, num_weights, self.step + 1, skip)
        if not skip:
            return
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if values.get(M.SKIPPED_UPDATES, 0) > 0 else 0
        if self.skipped_in_a_row >= self.params.max_skipped_in_a_row:
            raise NonFiniteError(f"step {self.step + 1}: non-finite loss or gradient in {self.skipped_in_a_row} steps "
                                 f"in a row (train.max_skipped_in_a_row={self.params.max_skipped_in_a_row}), their "
                                 "updates dropped; lower optim.lr")

    # ------------------------------------------------------------ loop
    def train(self, on_step=None) -> list[dict[str, float]]:
        """Run until ``params.steps``; checkpoint every ``checkpoint_every`` and at the end,
        then export the model. Ctrl-C / SIGTERM: the step in progress finishes, a checkpoint
        of it is written, then ``Interrupted`` (a KeyboardInterrupt) is raised; a second
        Ctrl-C raises KeyboardInterrupt at once, saving nothing."""
        every = self.params.checkpoint_every
        saved = None
        with InterruptGuard(self.engine, announce=self.engine.is_main) as guard:
            while self.step < self.params.steps:
                values = self.train_step()
                if on_step is not None:
                    on_step(self.step, values)
                saved = self.save() if every and self.step % every == 0 else None
                if guard.requested():
                    raise Interrupted(saved or self.save(), self.step)
            if saved is None and (not self.history or not every or self.step % every):
                self.save()
            self.export()
        return self.history

    def export(self) -> Path:
        """The final model in ``run_dir/model`` (transformers: ``from_pretrained(run_dir / "model")``),
        written to a temporary folder then renamed: a reader never finds half a model. Refused
        when a weight is non-finite."""
        bad, total = self.engine.nonfinite_weights()
        if int(bad):
            raise NonFiniteError(f"step {self.step}: non-finite weights ({int(bad):,} of {total:,} values); not exported")
        target = self.run_dir / "model"
        if not self.engine.is_main:
            self.engine.save_model(self.policy, target)  # takes part (sharded weights are gathered), writes nothing
            return target
        for stale in stale_temporaries(target):  # a killed export's (the run's lock: nobody else writes here)
            shutil.rmtree(stale)
        with atomic_folder(target, replace=True) as tmp:
            self.engine.save_model(self.policy, tmp)
        return target

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The run's state (with several processes: called on every process, since each one's
        sampling generator and sharded weights are gathered; only the main process's is complete)."""
        with self.engine.full_weights():
            policy = self.policy.state_dict() if self.engine.is_main else {}
        state = {
            "step": self.step,
            "policy": policy,
            "engine": self.engine.state_dict(),
            "reweighter": self.algo.reweighter.state_dict(),
            "task": self.task.state_dict(),
            "generator": self.generator.get_state(),
            "history": list(self.history),
            "skipped_in_a_row": self.skipped_in_a_row,
            "config": self.config,
        }
        if self.engine.world_size > 1:
            state["process_generators"] = self.engine.gather(self.generator.get_state()[None])  # (W, S)
        return state

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("process_generators")
        world = 1 if saved is None else saved.shape[0]
        if world != self.engine.world_size:
            raise ConfigError(f"resume: the checkpoint was written by {world} process(es), this run has "
                             f"{self.engine.world_size}; resume with the same number of processes")
        self.policy.load_state_dict(state["policy"])  # first: a checkpoint of another model fails here
        self.step = int(state["step"])
        self.skipped_in_a_row = int(state.get("skipped_in_a_row", 0))
        self.engine.load_state_dict(state["engine"] if "engine" in state else {"optimizer": state["optimizer"]})
        self.algo.reweighter.load_state_dict(state["reweighter"])
        self.task.load_state_dict(state["task"])
        self.generator.set_state(state["generator"] if saved is None else saved[self.engine.rank].clone())
        self.history = list(state["history"])
        self._p_exact = None  # restored weights

    def save(self) -> Path | None:
        """Write a checkpoint (the main process; every process must call it)."""
        state = self.state_dict()
        if not self.engine.is_main:
            return None
        return save_checkpoint(self.run_dir, self.step, state, self.params.keep_checkpoints)


def process_seed(seed: int, rank: int) -> int:
    """The sampling seed of process ``rank``: ``seed`` itself on the main process (one process
    is unchanged), an independent stream on the others."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)

