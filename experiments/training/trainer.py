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
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np
import torch

from algorithms import Algorithm
from algorithms.registry import integer
from experiments import metrics as M
from experiments.checkpoint import save_checkpoint
from experiments.engine import Engine
from policies.base import Policy, PromptBatch, Rollout
from rlvr_env.protocol import ExactTask, Task


class NonFiniteRewardError(ValueError):
    """A reward was NaN or infinite: the step is refused rather than trained on garbage."""


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
    run_name: str | None = None
    """Run directory name (default: <algo>-<env>-s<seed>-<time>)."""
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


@attrs.frozen
class StepBatch:
    """Everything sampled in one step: N >= P groups (N > P only with extra filter rounds).

    With several processes every process draws the same prompts, samples its share of the
    groups (``Engine.shard``) and holds only their responses; rewards and lengths are
    gathered, so advantages and reweighter state are computed identically everywhere."""

    prompts: PromptBatch
    rollout: Rollout
    raw_rewards: torch.Tensor
    """[N, G] verifier rewards of every process's groups, before shaping (accuracy metrics use these)."""
    lengths: torch.Tensor
    """[N, G] response lengths in tokens, every process's groups."""
    p_true: torch.Tensor | None
    """[N] exact success probabilities at sampling time, where the task knows them."""
    train_groups: torch.Tensor
    """[n] indices of the groups that enter the update (n <= P)."""
    stats: dict
    local_groups: torch.Tensor
    """[N_local] the groups this process sampled (indices into the N), in ``rollout`` order:
    ``rollout`` holds only these (all N on one process)."""


class Trainer:
    """Owns the stateful parts of a run: policy, engine (optimizer), reweighter, RNGs, step.

    ``exact`` is the task as an ``ExactTask`` when exact success probabilities exist for this
    policy (``rlvr_env.protocol.exact_view``), else None. ``evaluator`` is an optional
    held-out evaluation (``experiments.evaluator.PeriodicEval``): ``every`` and a call
    ``(policy) -> metrics`` that leaves the training RNGs alone.
    """

    def __init__(self, params: TrainParams, task: Task, policy: Policy, engine: Engine, algorithm: Algorithm,
                 max_grad_norm: float | None, seed: int, run_dir: Path, logger=None, exact: ExactTask | None = None,
                 evaluator: Callable | None = None):
        self.params = params
        self.task = task
        self.exact = exact
        self.evaluator = evaluator
        self.policy = policy
        self.engine = engine
        self.algo = algorithm
        self.max_grad_norm = max_grad_norm
        self.run_dir = Path(run_dir)
        self.logger = logger
        self.generator = torch.Generator().manual_seed(process_seed(seed, engine.rank))  # sampling, minibatch order
        self.prompt_source = None  # the arena sets a shared stream: (num) -> PromptBatch
        self.step = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        """One step; returns its metrics (the history keeps all but the wall-clock ``time/*``
        and ``speed/*`` ones, so that equal seeds give equal histories)."""
        timing: dict[str, float] = {}
        held_out = self.evaluate(timing)  # the policy that samples this step, like accuracy/batch
        batch = self.collect(timing)  # every group sampled this step (several rounds with a filter)
        rewards = self.algo.shape(batch.raw_rewards, batch.lengths)  # (N, G)
        advantages = self.algo.advantage(rewards)  # (N, G)
        weighted, reweight_stats = self.algo.reweighter(advantages, rewards)  # (N, G)
        train = batch.train_groups  # (n,) groups that enter the update (first P kept)
        mine = torch.isin(batch.local_groups, train).nonzero().squeeze(1)  # this process's share of them
        rollout = batch.rollout.select_groups(mine).with_(
            advantages=weighted[batch.local_groups[mine]].reshape(-1))  # (n_local * G,)
        start = time.perf_counter()
        loss_stats = self.update(rollout, num_groups=train.numel())
        self.policy.sync_sampler()  # new weights into a separate generation engine, if any
        timing["time/update_s"] = time.perf_counter() - start

        step_metrics = M.group_metrics(batch.raw_rewards, advantages, weighted, self.task.bucket(batch.prompts), batch.p_true)
        step_metrics.update(batch.stats)
        step_metrics.update(reweight_stats)
        step_metrics.update(self.engine.reduce_metrics({**loss_stats, **M.response_metrics(batch.rollout)},
                                                       sum_keys=("loss/value",)))  # per process -> all of them
        step_metrics.update(held_out)
        if self.engine.world_size > 1:
            step_metrics["processes/state_diff"] = self.check_replicas()
        if self.exact is not None:
            step_metrics.update(M.exact_accuracy(self.exact.success_probability(self.policy), self.exact.buckets))
            step_metrics.update(self.exact.policy_metrics(self.policy))
        self.step += 1
        values = M.to_host(step_metrics)  # the one host sync of the step
        self.history.append(values)
        values = {**values, **M.speed_metrics(timing, batch.lengths)}
        if self.logger is not None:
            self.logger.log(self.step, values)
            if self.params.samples_every and self.step % self.params.samples_every == 0:
                local = batch.local_groups
                self.logger.log_samples(self.step, batch.prompts.select(local), batch.rollout, batch.raw_rewards[local],
                                        self.params.samples_shown)
                self.logger.log_histogram(self.step, "reweight/weights", M.reweight_weights(advantages, weighted))
        return values

    def check_replicas(self) -> torch.Tensor:
        """Several processes: the reweighter state (HA-DW belief, ...) and a checksum of the
        weights (``Engine.replica_checksum``: replicas only, sharded weights exist once) must be
        the same on every process after each step; they are computed from the same gathered
        rewards and the same summed gradients. Returns the largest difference to the main
        process (0); a difference stops the run instead of training diverged replicas."""
        state = [torch.as_tensor(v, dtype=torch.float64).reshape(-1)
                 for v in self.algo.reweighter.state_dict().values()]
        mine = torch.cat(state + [self.engine.replica_checksum()])  # (F,)
        every = self.engine.gather(mine[None])  # (W, F)
        diff = (every - every[0]).abs().max()
        if diff > 0:
            raise RuntimeError(f"step {self.step + 1}: the processes' states differ (max difference {float(diff):.3g}): "
                               "reweighter state and weights must be identical replicas; a process sampled or "
                               "updated differently (different code, config or data on some process?)")
        return diff.float()

    def evaluate(self, timing: dict[str, float]) -> dict[str, torch.Tensor]:
        """Held-out metrics of the current policy when due (step 0, every ``evaluator.every``
        steps, and before the last update), else nothing."""
        ev = self.evaluator
        if ev is None or not (self.step % ev.every == 0 or self.step + 1 == self.params.steps):
            return {}
        with self.engine.full_weights():  # every process enters (sharded weights are gathered)
            if not self.engine.is_main:  # the main process evaluates (it alone writes); the others go on
                return {}
            start = time.perf_counter()
            metrics = ev(self.policy)
        timing["time/eval_s"] = time.perf_counter() - start
        return metrics

    def collect(self, timing: dict[str, float] | None = None) -> "StepBatch":
        """Sample P prompts x G responses and score them; with a filter, sample more rounds
        (up to ``filter.max_extra_rounds``) until P groups pass, then keep the first P.
        Each process samples and scores its share of the prompts (all of them on one process)."""
        t, exact, engine = self.params, self.exact, self.engine
        timing = {} if timing is None else timing
        clock = {"time/sample_s": 0.0, "time/reward_s": 0.0}
        rounds: list[tuple] = []
        passed = 0
        for round_ in range(1 + self.algo.filter.max_extra_rounds):
            shared = self.prompt_source is not None and round_ == 0  # extra filter rounds draw privately
            prompts = self.prompt_source(t.prompts_per_step) if shared else self.task.sample_prompts(t.prompts_per_step)
            p_true = exact.success_probability(self.policy, prompts.index) if exact else None  # exact p before sampling
            mine = engine.shard(len(prompts))  # this process's groups of the round
            local = prompts.select(mine)
            start = time.perf_counter()
            with engine.full_weights():  # processes sample different numbers of tokens
                rollout = self.policy.sample(local, t.group_size, self.generator)  # B = P_local * G responses
            scored = time.perf_counter()
            raw = engine.gather(self.task.rewards(local, rollout))  # (P, G), every process's groups
            lengths = engine.gather(rollout.mask.sum(dim=1).view(len(local), t.group_size))  # (P, G)
            clock["time/sample_s"] += scored - start
            clock["time/reward_s"] += time.perf_counter() - scored
            check_rewards(raw, self.step + 1)
            keep = self.algo.filter.keep(raw)  # (P,)
            groups = torch.arange(mine.start, mine.stop) + len(prompts) * round_  # (P_local,) indices into the N
            rounds.append((prompts, rollout, raw, lengths, p_true, keep, groups))
            if self.algo.filter.max_extra_rounds == 0:
                break
            passed += int(keep.sum())  # rewards live on the host: no device sync
            if passed >= t.prompts_per_step:
                break
        timing.update(clock)
        prompts, rollout, raw, lengths, p_true, keep, groups = zip(*rounds)
        keep = torch.cat(keep)  # (N,)
        train = keep.nonzero().squeeze(1)[: t.prompts_per_step]
        raw = torch.cat(raw)
        rollout = Rollout.concat(list(rollout))
        stats = {
            "sampling/rounds": torch.tensor(float(len(rounds))),
            "sampling/dropped_groups": (~keep).sum().float(),
            "sampling/train_groups": torch.tensor(float(train.numel())),
        }
        return StepBatch(
            prompts=PromptBatch.concat(list(prompts)),
            rollout=rollout,
            raw_rewards=raw,
            lengths=torch.cat(lengths),
            p_true=torch.cat(p_true) if exact else None,
            train_groups=train,
            stats=stats,
            local_groups=torch.cat(groups),
        )

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
                # a process may hold none of a minibatch: no backward then, but it takes part in the step
                micro = mb.split(self.params.micro_batch_size or len(mb)) if len(mb) else []
                idle = self.engine.passes(len(micro)) - len(micro)  # sharded weights: as many passes everywhere
                loss = torch.zeros(())
                for k, part in enumerate(micro):
                    logp = self.policy.logprobs(part)  # (b, T) on the policy's device
                    part = part.to(logp.device)
                    part_loss, stats = self.algo.objective(logp, part, totals)
                    self.engine.backward(part_loss, sync=k == len(micro) - 1)
                    loss = loss + part_loss.detach()
                    for key, v in stats.items():
                        collected.setdefault(f"loss/{key}", []).append(v.detach())
                for _ in range(idle):
                    self.engine.idle_pass()
                grad_norm = self.engine.step(self.max_grad_norm)
                collected.setdefault("loss/value", []).append(loss)
                collected.setdefault("loss/grad_norm", []).append(grad_norm)
        return {k: torch.stack(v).mean() for k, v in collected.items()}

    # ------------------------------------------------------------ loop
    def train(self, on_step=None) -> list[dict[str, float]]:
        """Run until ``params.steps``; checkpoint every ``checkpoint_every`` and at the end.

        On KeyboardInterrupt a checkpoint of the last finished step is written first.
        """
        every = self.params.checkpoint_every
        try:
            while self.step < self.params.steps:
                values = self.train_step()
                if on_step is not None:
                    on_step(self.step, values)
                if every and self.step % every == 0:
                    self.save()
        except KeyboardInterrupt:
            if self.step > 0:
                self.save()
            raise
        if not self.history or not (every and self.step % every == 0):
            self.save()
        self.engine.save_model(self.policy, self.run_dir / "model")  # transformers: from_pretrained(run_dir / "model")
        return self.history

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
        }
        if self.engine.world_size > 1:
            state["process_generators"] = self.engine.gather(self.generator.get_state()[None])  # (W, S)
        return state

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("process_generators")
        world = 1 if saved is None else saved.shape[0]
        if world != self.engine.world_size:
            raise ValueError(f"resume: the checkpoint was written by {world} process(es), this run has "
                             f"{self.engine.world_size}; resume with the same number of processes")
        self.step = int(state["step"])
        self.policy.load_state_dict(state["policy"])
        self.engine.load_state_dict(state["engine"] if "engine" in state else {"optimizer": state["optimizer"]})
        self.algo.reweighter.load_state_dict(state["reweighter"])
        self.task.load_state_dict(state["task"])
        self.generator.set_state(state["generator"] if saved is None else saved[self.engine.rank].clone())
        self.history = list(state["history"])

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


def check_rewards(rewards: torch.Tensor, step: int) -> None:
    """Refuse NaN / inf rewards with the offending positions (rewards live on the host)."""
    bad = ~torch.isfinite(rewards)
    if bad.any():
        where = bad.nonzero()[:5].tolist()
        raise NonFiniteRewardError(
            f"step {step}: {int(bad.sum())} non-finite reward(s) at [prompt, response] {where}; "
            "fix the reward function (return a finite value, or 0 for unscorable answers)"
        )
