"""Engines: what runs backward, clipping and the optimizer step, and what spans processes.

The trainer never touches the optimizer: it asks the engine for the minibatch ``totals``
(the counts every aggregation divides by), iterates ``micro_batches`` (calling ``backward``
on each) and calls ``step`` once per minibatch, gathers per-process rewards with ``gather``
and writes only where ``is_main``. ``LocalEngine`` is one process; ``DistributedEngine`` holds
a replica per process (DDP-style) and ``experiments.parallel.fsdp.FSDPEngine`` shards the
model over processes; both sum the totals and gather rewards over processes.

Sharded weights add one rule, kept behind the engine: every forward is a collective (it
gathers parameters), so sampling and evaluation run inside ``full_weights()`` (the whole
model on every process for the block, any number of forwards; a no-op for replicas), and
``micro_batches`` runs as many forward / backward passes on every process (its own
micro-batches, then zero-weight passes up to the most any process holds).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch

from algorithms.aggregation import Totals


@runtime_checkable
class Processes(Protocol):
    """What spans the data-parallel processes (one process: the identity)."""

    rank: int
    """This process's index (0 on one process; the main process writes)."""
    world_size: int
    """Number of data-parallel processes."""

    @property
    def is_main(self) -> bool:
        """rank 0: only the main process writes events, checkpoints and the summary."""
        ...

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """[P_local, ...] -> [P, ...]: every process's rows, in process order."""
        ...

    def reduce_metrics(self, values: dict[str, torch.Tensor], sum_keys=()) -> dict[str, torch.Tensor]:
        """Per-process 0-dim metrics -> their mean over processes (``*_max`` keys: the max;
        ``sum_keys``: the sum, e.g. a loss whose per-process parts add up to the whole)."""
        ...

    def totals(self, mask: torch.Tensor) -> Totals:
        """Token and response counts of the minibatch ``mask`` [B, T], over all processes."""
        ...


@runtime_checkable
class Engine(Processes, Protocol):
    """The update and the weights (see the module doc)."""

    def micro_batches(self, minibatch, size: int | None) -> Iterator[tuple[object, bool]]:
        """(micro-batch, is the last) of at most ``size`` responses of ``minibatch`` (a
        ``Rollout``; None: whole); a process that holds none of it yields nothing."""
        ...

    def backward(self, loss: torch.Tensor, *, sync: bool) -> None:
        """Accumulate gradients of ``loss``; ``sync`` on the last micro-batch of a minibatch
        (several processes reduce gradients then, not before)."""
        ...

    def step(self, max_grad_norm: float | None, loss: torch.Tensor | None = None) -> torch.Tensor:
        """Clip the global gradient norm, step the optimizer (and schedule), zero the
        gradients; returns the norm before clipping (0-dim). Every process calls it once per
        minibatch, also one that held no rows of it (no backward). A non-finite norm, or a
        non-finite ``loss`` (this process's part of the minibatch's) on any process, skips
        the optimizer and schedule step on every process; the norm returned is then
        non-finite (NaN for the loss)."""
        ...

    def any_process(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any (one process: ``flag``)."""
        ...

    def nonfinite_weights(self) -> tuple[torch.Tensor, int]:
        """(0-dim count of NaN / inf trainable weights over every process, number of trainable weights)."""
        ...

    def full_weights(self) -> contextlib.AbstractContextManager:
        """Every process enters it; inside, the policy's whole model is on every process, so
        forwards (sampling, evaluation, export) run locally, as many as each process likes."""
        ...

    def replica_difference(self, state: torch.Tensor) -> torch.Tensor:
        """0-dim: the largest difference to the main process of ``state`` [F] (the reweighter's
        state) and, for replicas, of a checksum of the weights; 0 when every process agrees."""
        ...

    def save_model(self, policy, path) -> None:
        """The final model under ``path`` (``policy.save_model``): every process calls it, the main one writes."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class LocalEngine:
    """One process: plain backward, ``clip_grad_norm_``, ``optimizer.step()``.

    Args:
        optimizer: over the policy's trainable parameters.
        scheduler: optional learning-rate schedule, stepped after every optimizer step.
    """

    rank = 0
    world_size = 1

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler=None):
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.params = [p for group in optimizer.param_groups for p in group["params"]]

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """The rows of ``n`` (the step's groups) this process samples: contiguous, in rank
        order, so ``gather`` of the per-process rows restores the original order."""
        return shard(n, self.rank, self.world_size)

    def reduce_metrics(self, values: dict[str, torch.Tensor], sum_keys=()) -> dict[str, torch.Tensor]:
        return values

    def backward(self, loss: torch.Tensor, *, sync: bool = True) -> None:
        loss.backward()

    def step(self, max_grad_norm: float | None, loss: torch.Tensor | None = None) -> torch.Tensor:
        grad_norm = self.clip(math.inf if max_grad_norm is None else max_grad_norm)
        if loss is not None and self.any_process(not bool(torch.isfinite(loss.detach()).all())):
            grad_norm = torch.full_like(grad_norm, math.nan)  # a non-finite loss: no update either
        if bool(torch.isfinite(grad_norm)):  # one host sync per optimizer step
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def clip(self, max_norm: float) -> torch.Tensor:
        """The global gradient norm before clipping (0-dim), gradients clipped to ``max_norm``."""
        return torch.nn.utils.clip_grad_norm_(self.params, max_norm).detach()

    def any_process(self, flag: bool) -> bool:
        return bool(flag)

    def nonfinite_weights(self) -> tuple[torch.Tensor, int]:
        with torch.no_grad():
            bad = torch.stack([(~torch.isfinite(p.detach())).sum().cpu() for p in self.params]).sum()
        return bad, sum(p.numel() for p in self.params)

    def totals(self, mask: torch.Tensor) -> Totals:
        return Totals.of(mask)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def full_weights(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def micro_batches(self, minibatch, size: int | None) -> Iterator[tuple[object, bool]]:
        parts = minibatch.split(size or len(minibatch)) if len(minibatch) else []
        for k, part in enumerate(parts):
            yield part, k == len(parts) - 1

    def replica_difference(self, state: torch.Tensor) -> torch.Tensor:
        everyone = self.gather(torch.cat([state.double().reshape(-1), self.weights_checksum()])[None])  # (W, F)
        return (everyone - everyone[0]).abs().max()

    def weights_checksum(self) -> torch.Tensor:
        """[1] float64: the sum of every weight (replicas must agree on it after each step)."""
        return torch.stack([p.detach().double().sum().cpu() for p in self.params]).sum().reshape(1)

    def save_model(self, policy, path) -> None:
        if self.is_main:
            policy.save_model(path)

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])


class DistributedEngine(LocalEngine):
    """Data parallel over ``torch.distributed`` (gloo on the CPU, nccl on GPUs), in processes
    started by ``accelerate launch`` or ``torchrun`` (they set RANK, WORLD_SIZE, MASTER_ADDR).

    Every process holds the whole model and computes the loss of its share of the responses,
    divided by the *global* totals (summed here over processes). Gradients are then summed
    over processes before clipping and the step, so each process applies exactly the
    gradient that one process would compute on the whole minibatch, and the replicas stay
    identical. (DDP would average instead; dividing by global totals makes the sum right.)
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler=None):
        self.join()
        super().__init__(optimizer, scheduler)
        broadcast_weights(self.params)  # every replica starts from the main process's weights

    def join(self) -> None:
        """Take rank and size from the initialised process group."""
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError(f"{type(self).__name__} needs torch.distributed initialised (start with accelerate "
                               "launch or torchrun; see README, 'Several processes')")
        self.dist = dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def reduce_gradients(self) -> None:
        """Sum every parameter's gradient over processes (one flat all-reduce; a missing gradient counts as 0)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.dist.all_reduce(flat)
        offset = 0
        for p, g in zip(self.params, grads):
            p.grad = flat[offset:offset + g.numel()].view_as(p).to(p.dtype)
            offset += g.numel()

    def step(self, max_grad_norm: float | None, loss: torch.Tensor | None = None) -> torch.Tensor:
        self.reduce_gradients()
        return super().step(max_grad_norm, loss)

    def any_process(self, flag: bool) -> bool:
        value = torch.tensor([float(bool(flag))])
        self.dist.all_reduce(value, op=self.dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def totals(self, mask: torch.Tensor) -> Totals:
        local = Totals.of(mask)
        counts = torch.stack([local.tokens, local.sequences.to(local.tokens.dtype)])
        self.dist.all_reduce(counts)
        return Totals(tokens=counts[0], sequences=counts[1])

    def reduce_metrics(self, values: dict[str, torch.Tensor], sum_keys=()) -> dict[str, torch.Tensor]:
        """A key some process lacks (it held no rows of any minibatch) counts on the others only."""
        everyone: list[list[str] | None] = [None] * self.world_size
        self.dist.all_gather_object(everyone, sorted(values))
        keys = sorted(set().union(*everyone))
        if not keys:
            return {}
        nan = torch.tensor(math.nan)
        stacked = torch.stack([values.get(k, nan).detach().float().cpu().reshape(()) for k in keys])  # (K,)
        present = torch.isfinite(stacked)
        total = torch.where(present, stacked, 0.0)
        count = present.float()
        peak = torch.where(present, stacked, -math.inf)
        for x in (total, count):
            self.dist.all_reduce(x)
        self.dist.all_reduce(peak, op=self.dist.ReduceOp.MAX)
        mean = total / count  # NaN where no process had a finite value
        reduced = [peak[i] if k.endswith("_max") else total[i] if k in sum_keys else mean[i] for i, k in enumerate(keys)]
        return {k: torch.where(count[i] > 0, v, math.nan) for i, (k, v) in enumerate(zip(keys, reduced))}

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every process's rows, in rank order (processes may hold different row counts)."""
        rows = torch.tensor([x.shape[0]])
        sizes = [torch.zeros_like(rows) for _ in range(self.world_size)]
        self.dist.all_gather(sizes, rows)
        width = int(max(s.item() for s in sizes))
        padded = torch.nn.functional.pad(x, (0, 0) * (x.dim() - 1) + (0, width - x.shape[0]))
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        self.dist.all_gather(parts, padded)
        return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def broadcast_weights(params: list[torch.Tensor]) -> None:
    """The main process's values of ``params`` on every process."""
    import torch.distributed as dist

    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def shard(n: int, rank: int, world_size: int) -> slice:
    """Rows [start, stop) of ``n`` for ``rank``: contiguous shares that differ by at most one
    row, the larger ones first (``torch.tensor_split``'s rule)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))
