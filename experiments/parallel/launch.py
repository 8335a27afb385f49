"""Several processes: joining the process group that ``accelerate launch`` / ``torchrun``
describe, picking the engine, and refusing what cannot run data-parallel.

    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m experiments.run policy=tiny-qwen3 ...
    torchrun --nproc_per_node 2 -m experiments.run policy=tiny-qwen3 ...

    accelerate launch --config_file configs/accelerate/fsdp_cpu_2proc.yaml -m experiments.run policy=tiny-qwen3 ...

The launchers set WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; with
WORLD_SIZE > 1 ``init_processes`` joins the group (gloo for CPU tensors, nccl for CUDA
tensors when GPUs exist) and ``build_engine`` returns a ``DistributedEngine`` (a replica per
process), or an ``FSDPEngine`` (``experiments.parallel.fsdp``: the model sharded) when an accelerate
FSDP config set ACCELERATE_USE_FSDP. Every process builds the same trainer from the same
config; each samples its share of the groups.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

import torch

from algorithms import ConfigError
from experiments.parallel.engine import DistributedEngine, LocalEngine
from experiments.parallel.fsdp import FSDPEngine, check_shardable, fsdp_requested, fsdp_settings


def launched_processes() -> int:
    """Processes the launcher started (WORLD_SIZE; 1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE: not an integer: {os.environ['WORLD_SIZE']!r}") from None


def init_processes() -> int:
    """Join the process group when a launcher started several processes; returns the rank.

    An FSDP config's settings are checked first (``experiments.parallel.fsdp.fsdp_settings``), DeepSpeed refused."""
    import torch.distributed as dist

    if launched_processes() == 1:
        return 0
    if dist.is_initialized():
        return dist.get_rank()
    if fsdp_requested():
        fsdp_settings()
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        raise ConfigError("accelerate: DeepSpeed is not supported; use a DDP config (configs/accelerate/)")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"  # rewards and counts live on the CPU, gradients on the GPU
    else:
        if os.environ.get("MASTER_ADDR") in ("127.0.0.1", "localhost"):  # one machine: gloo on the loopback
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        backend = "gloo"
    dist.init_process_group(backend)
    return dist.get_rank()


def processes() -> int:
    """Processes in the initialised process group (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def launched_as_main() -> bool:
    """Rank 0 by the launcher's RANK (or no launcher), before any process group exists."""
    return os.environ.get("RANK", "0") == "0"


def is_main_process() -> bool:
    """Rank 0 of the initialised process group, or the only process."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def close_processes() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def end_process(code: int) -> NoReturn:
    """End a process that was in a process group: flush, then ``os._exit(code)``, without
    interpreter finalization.

    Once ``torch._dynamo`` is imported (building any optimizer imports it), ``destroy_process_group``
    leaves gloo's process group and its worker threads alive; a worker thread frees the last
    collective's tensors (Python objects) just after the main thread's ``wait()`` returns. If
    the main thread is already finalizing the interpreter, taking the GIL there ends the process
    with SIGABRT ("terminate called without an active exception"; seen under load, 1 run in 5).
    Nothing of ours needs finalization: run files are closed and fsynced before this.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def build_engine(policy, make_optimizer: Callable, make_scheduler: Callable) -> LocalEngine:
    """The engine and its optimizer (``make_optimizer(parameters)``, ``make_scheduler(optimizer)``):
    inside an initialised process group of several processes ``FSDPEngine`` under an FSDP config,
    else ``DistributedEngine``; ``LocalEngine`` on one process. FSDP builds the optimizer over
    the shards, after sharding."""
    if processes() > 1 and fsdp_requested():
        return FSDPEngine(policy, make_optimizer, make_scheduler, fsdp_settings())
    optimizer = make_optimizer(policy.parameters())
    engine = DistributedEngine if processes() > 1 else LocalEngine
    return engine(optimizer, make_scheduler(optimizer))


def check_data_parallel(world: int, policy, policy_name: str, exact, prompts_per_step: int) -> None:
    """Refuse, before anything is written, what several processes cannot train."""
    if world == 1:
        return
    if fsdp_requested():
        check_shardable(policy, policy_name)
    if not policy.multi_process:
        raise ConfigError(f"policy={policy_name}: this policy runs in one process only (started {world}); "
                          "run it without accelerate launch (many tabular runs at once: experiments.sim, "
                          "or a sweep with -m; a language model with policy.sampler=vllm: one process for now, "
                          "or policy.sampler=hf)")
    if exact is not None:
        raise ConfigError("exact success probabilities are single-process only; run without accelerate launch")
    if prompts_per_step < world:
        raise ConfigError(f"train.prompts_per_step: {prompts_per_step} prompts cannot be shared by {world} "
                          f"processes (each samples whole groups); use at least {world}")


def broadcast_object(value, src: int = 0):
    """``value`` of process ``src`` on every process (a no-op on one process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]
