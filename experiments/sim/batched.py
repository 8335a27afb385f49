"""The batched simulator: R tabular runs as one set of tensors, one step for all of them.

    weights [R, ...] -> logits [R, N, K] -> prompts [R, P] -> answers [R, P, G] -> rewards [R, P, G]
      -> per algorithm group: shaping, advantage, reweighter on [R_g, P, G] (state [R_g])
      -> per epoch / minibatch: logp [R, b, 1] -> vmap(loss + KL + aggregation) -> [R]
         -> sum -> backward -> per-run clipping -> per-run Adam / SGD step
      -> metrics [R] (experiments.training.metrics over a leading run dimension)

Every run is built by the single-run builder (``build_trainer``): configs are validated
the same way, and tasks, initial logits, algorithms and optimizer settings are exactly a
single run's. The algorithm stages are the registered ones, called on tensors with a
leading run dimension (advantages, reweighters, metrics) or under ``torch.vmap``
(``Algorithm.objective``: loss, KL and aggregation, defined on [B, T]); no stage is
re-implemented here. The logits are the policy's own ``logit_table`` of the runs' stacked
weights (the tabular policy: the table itself; the log-linear one: per-prompt terms and shared
skill scores), so any ``AnswerTablePolicy`` runs here.

Runs may differ in seed, bank content, algorithm, reweighter and their hyperparameters,
learning rate, weight decay and max_grad_norm. They must share the env, the shapes
(N, K, P, G), steps, epochs, minibatches and optimizer kind (``batch_key``). Runs with the
same algo + reweight config form a *group*: its stages run once on the group's slice.

Not batched (``NotBatchable``): policies without an answer table (language models), reward functions other than the verifier
(``env.rewards``), and filters that drop groups (DAPO's
dynamic sampling: runs would differ in batch size and sampling rounds); ``run_sweep``
sends such runs to worker processes as single runs. Batched runs keep no checkpoints.
"""

from __future__ import annotations

import copy
import json
import math
from functools import partial
from pathlib import Path

import attrs
import numpy as np
import torch

from algorithms import Algorithm
from algorithms.aggregation import Totals
from algorithms.registry import build_params
from experiments.training import metrics as M
from algorithms.optim import OptimParams
from experiments.training.build import build_trainer
from experiments.training.guards import NonFiniteError
from experiments.sim.batchable import NotBatchable, check_batchable
from experiments.sim.draws import DRAWS, RunDraws, TrainerDraws
from experiments.sim.history import History
from experiments.sim.per_run_optim import RunOptimizer, clip_per_run
from policies.tabular import AnswerTablePolicy

@attrs.frozen
class MicroBatch:
    """What ``Algorithm.objective`` reads of a micro-batch, for one run's tensors [b, T]."""

    mask: torch.Tensor
    old_logp: torch.Tensor
    advantages: torch.Tensor
    """[b] one value per response."""
    ref_logp: torch.Tensor
    sampler_logp: None = None  # the tabular policy samples with its own weights


def run_objective(algo: Algorithm, logp, old_logp, advantages, mask, ref_logp):
    """One run's minibatch loss as the Trainer computes it, ``Algorithm.objective`` itself:
    (scalar, stats); tensors [b, T] (``advantages`` [b, 1]); vmapped over runs."""
    loss, stats = algo.objective(logp, MicroBatch(mask, old_logp, advantages[:, 0], ref_logp), Totals.of(mask))
    return loss, {**stats, "value": loss.detach()}


def rows(table: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
    """[R, P, K] rows ``ids`` [R, P] of ``table`` [R, N, K] (the whole table when ids is None)."""
    if ids is None:
        return table
    runs, num_prompts, k = table.shape
    flat = (ids + num_prompts * torch.arange(runs)[:, None]).reshape(-1)  # row r * N + i of the flat table
    return table.reshape(runs * num_prompts, k).index_select(0, flat).view(runs, -1, k)  # ~10x faster than gather


@attrs.frozen
class RunGroup:
    """Runs sharing one algo + reweight config, and that algorithm's bound stages."""

    algo: Algorithm
    runs: list[int]
    index: torch.Tensor | None
    """[R_g] run indices, or None when the group is every run (no copies)."""

    def take(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.index is None else x.index_select(0, self.index)


class BatchedSimulator:
    """R tabular runs stepped together; ``run()`` returns one ``History`` per run, in order."""

    def __init__(self, configs: list[dict], draws: str = "runs", exact: bool | None = None,
                 run_dirs: list[Path] | None = None):
        """``draws``: "runs" (fast) or "trainer" (the single runs' own random streams, see
        experiments.sim.draws). ``exact`` (default: draws == "trainer") computes log-probs per
        response in minibatch order, as the Trainer does, so that gradients are bitwise the
        single run's (Adam turns rounding-level gradients of unsampled answers into steps
        of ~0.1 lr, so anything less diverges at ~1e-3); otherwise per prompt (G times
        less work, the same gradient up to rounding)."""
        if not configs:
            raise ValueError("BatchedSimulator needs at least one run config")
        if draws not in DRAWS:
            raise ValueError(f"draws: must be one of {', '.join(DRAWS)}, got {draws!r}")
        check_batchable(configs)
        self.configs = configs
        run_dirs = run_dirs or [Path(c["train"]["log_dir"]) / f"batched-{i}" for i, c in enumerate(configs)]
        self.trainers = [build_trainer(c, d) for c, d in zip(configs, run_dirs)]  # validates every run
        for i, t in enumerate(self.trainers):
            if not isinstance(t.policy, AnswerTablePolicy) or not hasattr(t.task, "correct"):
                raise NotBatchable(f"run {i}: the batched simulator needs a tabular policy and a task with a correct-answer table")
        self.policy = check_fixed_tensors([t.policy for t in self.trainers])  # its logit_table serves every run
        # the verifier's reward, logged as reward/verifier as the trainer does (none for the bandit)
        self.reward_names = [f.name for f in getattr(self.trainers[0].task, "reward_functions", ())]
        self.params = self.trainers[0].params  # shared: steps, P, G, epochs, minibatches
        self.weights = {name: torch.stack([t.policy.weights()[name].detach() for t in self.trainers]).requires_grad_(True)
                        for name in self.policy.weights()}  # name -> (R, ...): tabular: logits (R, N, K)
        self.ref_logits = torch.stack([t.policy.ref_logits for t in self.trainers])  # (R, N, K)
        self.bank = stack_tasks([t.task for t in self.trainers])  # the R tasks as one, tensors (R, ...)
        self.correct = self.bank.correct.float()  # (R, N, K): 1 where correct
        self.buckets = self.bank.buckets  # (R, N)
        optim = [build_params(OptimParams, c["optim"], "optim") for c in configs]
        self.optimizers = [RunOptimizer(w, optim) for w in self.weights.values()]  # Adam is per tensor, as torch's
        norms = [t.max_grad_norm for t in self.trainers]
        self.max_norm = None if all(n is None for n in norms) else torch.tensor([math.inf if n is None else n for n in norms])
        self.groups = make_groups(configs, self.trainers)
        num_prompts, p = self.ref_logits.shape[1], self.params.prompts_per_step
        self.draws = (TrainerDraws(self.trainers, p) if draws == "trainer" else
                      RunDraws([c["seed"] for c in configs], num_prompts, p, shuffle=self.params.minibatches > 1))
        self.exact = draws == "trainer" if exact is None else exact
        self.logp_table = self.log_softmax()  # (R, N, K) of the current logits
        self.probs_table = self.logp_table.exp()
        self.run_index = torch.arange(len(configs))[:, None]  # (R, 1)
        self.step = 0
        self.records: list[list[torch.Tensor]] = []  # per step: [common-before [K1, R], group g [K_g, R_g]..., common-after [K2, R]]
        self.keys: list[list[str]] | None = None

    @property
    def num_runs(self) -> int:
        return self.ref_logits.shape[0]

    @property
    def logits(self) -> torch.Tensor:
        """[R, N, K] every run's logit table, with grad (tabular: the weights themselves)."""
        return self.policy.logit_table(self.weights)

    # ------------------------------------------------------------ one step
    def train_step(self) -> None:
        """Sample, score, reweight, update and record metrics for every run."""
        g = self.params.group_size
        with torch.no_grad():
            ids = self.draws.prompts()  # (R, P) or None: every prompt
            logp_all = rows(self.logp_table, ids)  # (R, P, K): the policy's log_softmax rows
            probs = rows(self.probs_table, ids)  # their exp
            answers = self.draws.answers(probs, g)  # (R, P, G)
            correct = rows(self.correct, ids)  # (R, P, K)
            raw = correct.gather(-1, answers)  # (R, P, G) verifier rewards
            p_true = (probs * correct).sum(-1)  # (R, P) exact p at sampling time
            old_logp = logp_all.gather(-1, answers)  # (R, P, G)
            buckets = self.buckets if ids is None else self.buckets.gather(1, ids)  # (R, P)

        group_stats, parts = [], []
        for grp in self.groups:
            rewards = grp.take(raw)
            rewards = grp.algo.shape(rewards, torch.ones_like(rewards))  # (R_g, P, G); every response is 1 token
            adv = grp.algo.advantage(rewards)
            w, stats = grp.algo.reweighter(adv, rewards)
            parts.append((adv, w))
            group_stats.append(stats)
        advantages, weighted = (join(self.groups, [part[i] for part in parts]) for i in (0, 1))  # (R, P, G)
        loss_stats = self.update(ids, answers, old_logp, weighted)
        self.check_finite(loss_stats)

        before = M.group_metrics(raw, advantages, weighted, buckets, p_true)  # name -> (R,)
        before.update(M.function_rewards({name: raw for name in self.reward_names}, raw))
        runs = self.num_runs
        before.update({"sampling/rounds": torch.ones(runs), "sampling/dropped_groups": torch.zeros(runs),
                       "sampling/train_groups": torch.full((runs,), float(self.params.prompts_per_step))})
        self.logp_table = self.log_softmax()  # after the update: metrics now, sampling next step
        self.probs_table = self.logp_table.exp()
        policy = TableView(self.probs_table)  # the R policies' probs (R, N, K), as the task reads them
        # A tabular response is one complete token: the Trainer's response metrics are constant.
        after = {"response/length_mean": torch.ones(runs), "response/length_max": torch.ones(runs),
                 "response/truncated_frac": torch.zeros(runs)}
        after.update(M.exact_accuracy(self.bank.success_probability(policy), self.buckets))  # the Trainer's calls
        if hasattr(self.bank, "policy_metrics"):
            after.update(self.bank.policy_metrics(policy))
        per_group = [{**reweight, **loss} for reweight, loss in zip(group_stats, loss_stats)]
        self.record(before, per_group, after)
        self.step += 1

    def update(self, ids, answers, old_logp, weighted) -> list[dict[str, torch.Tensor]]:
        """PPO-style epochs over minibatches, every run at once; per group: mean loss stats [R_g]."""
        runs, p, g = answers.shape
        batch = p * g
        old = old_logp.reshape(runs, batch, 1)  # (R, B, T = 1)
        adv = weighted.reshape(runs, batch, 1)
        ref = None
        if any(grp.algo.kl_beta > 0 for grp in self.groups):
            with torch.no_grad():
                ref = torch.log_softmax(rows(self.ref_logits, ids), -1).gather(-1, answers).reshape(runs, batch, 1)
        num_minibatches = min(self.params.minibatches, batch)
        collected: list[dict[str, list[torch.Tensor]]] = [{} for _ in self.groups]
        for _ in range(self.params.ppo_epochs):
            order = self.draws.order(batch)  # (R, B) or None: in order
            if order is None and num_minibatches > 1:
                order = torch.arange(batch).expand(runs, batch)
            for index in order.chunk(num_minibatches, dim=1) if order is not None else [None]:
                logp = self.logprobs(ids, answers, index)  # (R, b, 1) with grad
                old_mb, adv_mb = pick(old, index), pick(adv, index)
                ref_mb = pick(ref, index) if ref is not None else old_mb  # unused without KL
                mask = torch.ones_like(old_mb)
                total = 0.0
                for grp, out in zip(self.groups, collected):
                    objective = torch.vmap(partial(run_objective, grp.algo))
                    loss, stats = objective(*(grp.take(x) for x in (logp, old_mb, adv_mb, mask, ref_mb)))  # (R_g,)
                    total = total + loss.sum()
                    for k, v in stats.items():
                        out.setdefault(f"loss/{k}", []).append(v.detach())
                for w in self.weights.values():
                    w.grad = None
                total.backward()  # each run's gradient is its own: runs share no parameters
                grads = [w.grad for w in self.weights.values()]
                grad_norm = clip_per_run(grads, self.max_norm)  # (R,)
                for optimizer, grad in zip(self.optimizers, grads):
                    optimizer.step(grad)
                for grp, out in zip(self.groups, collected):
                    out.setdefault(M.GRAD_NORM, []).append(grp.take(grad_norm))
                    out.setdefault(M.SKIPPED_UPDATES, []).append((~torch.isfinite(grp.take(grad_norm))).float())
        return [{k: torch.stack(v).sum(0) if k == M.SKIPPED_UPDATES else torch.stack(v).mean(0) for k, v in out.items()}
                for out in collected]

    def check_finite(self, loss_stats: list[dict[str, torch.Tensor]]) -> None:
        """The Trainer's ``on_nonfinite=stop``, per run (one host sync): a non-finite loss,
        gradient norm or weight stops every run, naming the first such run."""
        bad = ~torch.stack([torch.isfinite(w.detach()).flatten(1).all(1) for w in self.weights.values()]).all(0)  # (R,)
        for grp, stats in zip(self.groups, loss_stats):
            for key in (M.LOSS, M.GRAD_NORM):
                bad[grp.runs] |= ~torch.isfinite(stats[key])
        if bad.any():
            run = int(bad.nonzero()[0])
            raise NonFiniteError(f"step {self.step + 1}: run {run} (seed {self.configs[run]['seed']}): non-finite loss, "
                                 "gradient or weights; lower its optim.lr")

    @torch.no_grad()
    def log_softmax(self) -> torch.Tensor:
        """[R, N, K] log pi(answer | prompt) of every run, no grad (rows are the policy's)."""
        return torch.log_softmax(self.logits, dim=-1)

    def logprobs(self, ids: torch.Tensor | None, answers: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """[R, b, 1] log-probabilities of the responses ``index`` [R, b] (None: all B, in order)."""
        runs, p, g = answers.shape
        table = self.logits  # (R, N, K) with grad
        if not self.exact:  # one log-softmax per prompt, then its G answers
            return pick(torch.log_softmax(rows(table, ids), -1).gather(-1, answers).reshape(runs, p * g, 1), index)
        ids = torch.arange(p).expand(runs, p) if ids is None else ids
        prompt = ids.repeat_interleave(g, dim=1)  # (R, B): the Trainer's per-response rows, minibatch order
        answer = answers.reshape(runs, p * g)
        if index is not None:
            prompt, answer = prompt.gather(1, index), answer.gather(1, index)
        return torch.log_softmax(table[self.run_index, prompt], -1).gather(-1, answer[..., None])

    # ------------------------------------------------------------ metrics
    def record(self, before: dict, per_group: list[dict], after: dict) -> None:
        """Keep this step's metrics as tensors (read once, by ``histories``)."""
        parts = [before, *per_group, after]
        if self.keys is None:
            self.keys = [list(p) for p in parts]
        self.records.append([torch.stack([p[k].detach().float().reshape(-1) for k in keys])
                             for p, keys in zip(parts, self.keys)])

    def histories(self) -> list[History]:
        """One History per run, tags in the single-run Trainer's order."""
        if not self.records:
            return [History((), np.zeros((0, 0), np.float32)) for _ in range(self.num_runs)]
        blocks = [torch.stack([step[i] for step in self.records]).numpy() for i in range(len(self.keys))]  # (S, K_i, R_i)
        before, after = blocks[0], blocks[-1]
        out = [None] * self.num_runs
        for gi, grp in enumerate(self.groups):
            keys = tuple(self.keys[0] + self.keys[1 + gi] + self.keys[-1])
            for j, r in enumerate(grp.runs):
                values = np.concatenate([before[:, :, r], blocks[1 + gi][:, :, j], after[:, :, r]], axis=1)
                out[r] = History(keys, np.ascontiguousarray(values))
        return out

    # ------------------------------------------------------------ loop
    def run(self, on_step=None) -> list[History]:
        """Train every run to ``train.steps``; ``on_step(step)`` after each step."""
        while self.step < self.params.steps:
            self.train_step()
            if on_step is not None:
                on_step(self.step)
        return self.histories()


def pick(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """[R, b, 1] responses ``index`` [R, b] of ``x`` [R, B, 1] (all of them when index is None)."""
    return x if index is None else x.gather(1, index[..., None])


class TableView:
    """What a task reads from a tabular policy (``probs``), for R runs at once: [R, N, K]."""

    def __init__(self, probs: torch.Tensor):
        self._probs = probs

    def probs(self, prompt_ids: torch.Tensor | None = None) -> torch.Tensor:
        if prompt_ids is not None:
            raise NotImplementedError("the batched simulator reads whole tables")
        return self._probs


def check_fixed_tensors(policies: list[AnswerTablePolicy]) -> AnswerTablePolicy:
    """The first policy, once every run's fixed tensors (buffers other than the KL reference,
    e.g. the log-linear skill mixture) are equal to its: its ``logit_table`` then serves all."""
    first = dict(policies[0].named_buffers())
    for i, policy in enumerate(policies[1:], start=1):
        for name, value in policy.named_buffers():
            if name != "ref_logits" and not torch.equal(value, first[name]):
                raise NotBatchable(f"run {i}: policy tensor {name!r} differs from run 0's; runs of one batch share it")
    return policies[0]


def stack_tasks(tasks: list) -> object:
    """The R runs' tasks as one object of their class whose tensor attributes are stacked
    [R, ...]: task methods written for leading run dimensions (``success_probability``,
    ``policy_metrics``) then give every run's values at once."""
    if len({type(t) for t in tasks}) != 1:
        raise NotBatchable(f"runs have different task classes: {sorted({type(t).__name__ for t in tasks})}")
    stacked = copy.copy(tasks[0])
    for name, value in vars(tasks[0]).items():
        values = [getattr(t, name) for t in tasks]
        if torch.is_tensor(value):
            if any(not torch.is_tensor(v) or v.shape != value.shape for v in values):
                raise NotBatchable(f"task attribute {name!r} differs in shape between runs")
            setattr(stacked, name, torch.stack(values))
        elif value is None and any(v is not None for v in values):
            raise NotBatchable(f"task attribute {name!r} is set in some runs only")
    return stacked


def join(groups: list[RunGroup], parts: list[torch.Tensor]) -> torch.Tensor:
    """[R, ...] from each group's slice [R_g, ...] (the slice itself for a single group)."""
    if len(groups) == 1:
        return parts[0]
    full = parts[0].new_empty((sum(len(g.runs) for g in groups), *parts[0].shape[1:]))
    for grp, part in zip(groups, parts):
        full.index_copy_(0, grp.index, part)
    return full


def make_groups(configs: list[dict], trainers: list) -> list[RunGroup]:
    """Runs with equal algo + reweight configs, each group with the first run's algorithm."""
    members: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        members.setdefault(json.dumps([c["algo"], c.get("reweight")], sort_keys=True), []).append(i)
    single = len(members) == 1
    return [RunGroup(trainers[runs[0]].algo, runs, None if single else torch.tensor(runs)) for runs in members.values()]
