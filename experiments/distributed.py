"""Several processes: joining the process group that ``accelerate launch`` / ``torchrun``
describe, picking the engine, and refusing what cannot run data-parallel.

    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m experiments.run policy=tiny-qwen3 ...
    torchrun --nproc_per_node 2 -m experiments.run policy=tiny-qwen3 ...

The launchers set WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; with
WORLD_SIZE > 1 ``init_processes`` joins the group (gloo for CPU tensors, nccl for CUDA
tensors when GPUs exist) and ``build_engine`` returns a ``DistributedEngine``. Every process
builds the same trainer from the same config; each samples its share of the groups.
"""

from __future__ import annotations

import os

import torch

from algorithms import ConfigError
from experiments.engine import DistributedEngine, LocalEngine


def launched_processes() -> int:
    """Processes the launcher started (WORLD_SIZE; 1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE: not an integer: {os.environ['WORLD_SIZE']!r}") from None


def init_processes() -> int:
    """Join the process group when a launcher started several processes; returns the rank.

    FSDP (``accelerate launch --use_fsdp`` or an FSDP config file) is refused: the replicas of
    ``DistributedEngine`` each hold the whole model (DDP-style)."""
    import torch.distributed as dist

    if launched_processes() == 1:
        return 0
    if dist.is_initialized():
        return dist.get_rank()
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        raise ConfigError("accelerate: FSDP is not supported yet; every process holds the whole model "
                          "(DDP). Use configs/accelerate/ddp_gpu.yaml (or cpu_2proc.yaml on the CPU), or LoRA "
                          "(policy.lora.r=...) when the full model does not fit in one device with its optimizer")
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


def close_processes() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def build_engine(optimizer: torch.optim.Optimizer, scheduler=None) -> LocalEngine:
    """``DistributedEngine`` inside an initialised process group of several processes, else ``LocalEngine``."""
    if processes() > 1:
        return DistributedEngine(optimizer, scheduler)
    return LocalEngine(optimizer, scheduler)


def check_data_parallel(world: int, policy, policy_name: str, exact, prompts_per_step: int) -> None:
    """Refuse, before anything is written, what several processes cannot train."""
    if world == 1:
        return
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
