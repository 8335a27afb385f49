"""FSDP: the policy's model sharded over processes (FSDP2, ``torch.distributed.fsdp.fully_shard``).

    accelerate launch --config_file configs/accelerate/fsdp_cpu_2proc.yaml -m experiments.run policy=tiny-qwen3 ...
    accelerate launch --config_file configs/accelerate/fsdp_gpu.yaml --num_processes 8 -m experiments.run ...

An accelerate config with ``distributed_type: FSDP`` makes ``accelerate launch`` export
ACCELERATE_USE_FSDP=true and the ``fsdp_config`` entries as FSDP_* variables (FSDP_VERSION,
FSDP_RESHARD_AFTER_FORWARD, FSDP_TRANSFORMER_CLS_TO_WRAP, ...); ``fsdp_settings`` reads them
and refuses what this engine does not do. ``torchrun`` users set the same variables.

Every decoder layer is one FSDP unit and the policy's ``scorer`` (the training pass: trunk
and LM head) the root, so each process keeps 1 / W of every weight, gradient and optimizer
moment. Losses are divided by the totals of the whole minibatch over all processes, so the
reduce-scatter *sums* gradients (divide factor 1) and the result is the gradient one process
would compute on the global batch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import attrs
import torch

from algorithms import ConfigError
from experiments.parallel.engine import DistributedEngine, LocalEngine, broadcast_weights
from policies.base import Rollout

TRUE = ("1", "true")


@attrs.frozen
class FSDPSettings:
    """What the accelerate FSDP config (its FSDP_* variables) sets for this engine."""

    reshard_after_forward: bool = True
    """Free each layer's gathered weights after its forward (true: least memory; false: kept for the backward)."""
    layer_classes: tuple[str, ...] | None = None
    """Module classes sharded as units (None: the model's ``_no_split_modules``, its decoder layers)."""
    wrap_layers: bool = True
    """Shard layers as their own units (false, ``fsdp_auto_wrap_policy: NO_WRAP``: the root only)."""


def fsdp_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in TRUE


def fsdp_settings() -> FSDPSettings:
    """The launcher's FSDP settings; refuses what is not supported, naming the config key."""
    env = os.environ.get
    if env("FSDP_VERSION", "1") != "2":
        raise ConfigError(f"accelerate FSDP: fsdp_version {env('FSDP_VERSION', '1')} is not supported; set "
                          "fsdp_config: {fsdp_version: 2} (FSDP2, fully_shard), as configs/accelerate/fsdp_*.yaml do")
    refused = {"FSDP_OFFLOAD_PARAMS": "fsdp_offload_params: CPU offload is not supported",
               "FSDP_ACTIVATION_CHECKPOINTING": "fsdp_activation_checkpointing: use policy.gradient_checkpointing=true",
               "FSDP_CPU_RAM_EFFICIENT_LOADING": "fsdp_cpu_ram_efficient_loading: every process loads the model"}
    for key, why in refused.items():
        if env(key, "false").lower() in TRUE:
            raise ConfigError(f"accelerate FSDP: {why} (set it to false)")
    if env("FSDP_STATE_DICT_TYPE", "FULL_STATE_DICT") != "FULL_STATE_DICT":
        raise ConfigError(f"accelerate FSDP: fsdp_state_dict_type {env('FSDP_STATE_DICT_TYPE')} is not supported; "
                          "checkpoints hold full state dicts gathered on the main process (FULL_STATE_DICT)")
    wrap = env("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
    if wrap not in ("TRANSFORMER_BASED_WRAP", "NO_WRAP"):
        raise ConfigError(f"accelerate FSDP: fsdp_auto_wrap_policy {wrap} is not supported; use TRANSFORMER_BASED_WRAP "
                          "(each decoder layer a unit) or NO_WRAP (the whole model one unit)")
    reshard = env("FSDP_RESHARD_AFTER_FORWARD", "true").lower()
    if reshard not in ("true", "false"):
        raise ConfigError(f"accelerate FSDP: fsdp_reshard_after_forward {reshard!r}: FSDP2 takes true or false")
    classes = tuple(c.strip() for c in env("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if c.strip())
    return FSDPSettings(reshard_after_forward=reshard == "true", layer_classes=classes or None,
                        wrap_layers=wrap == "TRANSFORMER_BASED_WRAP")


def check_shardable(policy, policy_name: str) -> None:
    """Refuse, before anything is written, a policy FSDP cannot shard."""
    if getattr(policy, "scorer", None) is None:
        raise ConfigError(f"policy={policy_name}: FSDP shards a transformers policy's model; this policy has none "
                          "(use a DDP config: configs/accelerate/cpu_2proc.yaml)")
    if policy.params.lora.r > 0:
        raise ConfigError("accelerate FSDP with LoRA (policy.lora.r > 0) is not supported: the adapters are small, "
                          "train them data-parallel with a DDP config (configs/accelerate/cpu_2proc.yaml or "
                          "ddp_gpu.yaml)")


class FSDPEngine(DistributedEngine):
    """FSDP2 over ``torch.distributed`` (gloo on the CPU, nccl on GPUs).

    Shards ``policy.scorer`` (see the module docstring), then builds the optimizer over the
    shards (DTensors). Backward reduce-scatters (sums) every micro-batch's gradients into
    the shards; ``step`` clips by the norm over all shards (``clip_grad_norm_`` on DTensors)
    and steps each process's shard. Sampling and evaluation run in ``full_weights``: every
    unit gathered once and kept until the block ends, since processes run different numbers
    of forwards there. In the update every process runs ``passes`` forward / backward passes,
    its missing ones as a zero-weighted one-token pass (``idle_pass``).

    Args:
        policy: a transformers policy (``scorer``: the training pass as a module).
        make_optimizer: parameters -> optimizer (called on the shards).
        make_scheduler: optimizer -> learning-rate schedule or None.
        settings: from the accelerate config (``fsdp_settings``).
    """

    def __init__(self, policy, make_optimizer, make_scheduler, settings: FSDPSettings = FSDPSettings()):
        from torch.distributed.fsdp import fully_shard

        self.join()
        self.policy, self.settings = policy, settings
        root = policy.scorer
        broadcast_weights(list(root.parameters()))  # every shard cut from the main process's weights
        classes = settings.layer_classes or tuple(getattr(policy.causal, "_no_split_modules", None) or ())
        self.layers = [m for m in root.modules() if type(m).__name__ in classes] if settings.wrap_layers else []
        if settings.wrap_layers and not self.layers:
            named = " or ".join(classes) or "(no class named)"
            raise ConfigError(f"accelerate FSDP: no module of the model is a {named}; set "
                              "fsdp_transformer_layer_cls_to_wrap to its decoder layer's class, or "
                              "fsdp_auto_wrap_policy: NO_WRAP (the whole model one unit)")
        for layer in self.layers:
            fully_shard(layer, reshard_after_forward=settings.reshard_after_forward)
        self.root = fully_shard(root)
        self.units = [*self.layers, self.root]
        for unit in self.units:  # our losses are already divided by the global totals: sum, do not average
            unit.set_gradient_divide_factor(1.0)
            unit.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM / AVG
        optimizer = make_optimizer(policy.parameters())
        LocalEngine.__init__(self, optimizer, make_scheduler(optimizer))
        token = torch.zeros(1, 1, dtype=torch.long)  # id 0 after id 0: any vocabulary has it
        self.idle = Rollout(prompt_index=torch.zeros(1, dtype=torch.long), prompt_tokens=token,
                            prompt_mask=torch.ones(1, 1), tokens=token, mask=torch.ones(1, 1),
                            old_logp=torch.zeros(1, 1), texts=("",), group_size=1)
        self._gathered = 0
        with torch.no_grad():  # the root's first forward makes it FSDP's root (a layer's first would claim it)
            policy.logprobs(self.idle)
        for unit in self.units:
            unit.reshard()

    def step(self, max_grad_norm: float | None, loss: torch.Tensor | None = None) -> torch.Tensor:
        """Gradients are already summed into the shards by backward's reduce-scatters."""
        return LocalEngine.step(self, max_grad_norm, loss)

    def clip(self, max_norm: float) -> torch.Tensor:
        return LocalEngine.clip(self, max_norm).full_tensor()  # the norm is a replicated DTensor

    def nonfinite_weights(self) -> tuple[torch.Tensor, int]:
        """Each process counts its shards; the counts add up."""
        with torch.no_grad():
            local = torch.stack([(~torch.isfinite(p.detach().to_local())).sum().cpu().double() for p in self.params]).sum()
        self.dist.all_reduce(local)
        return local, sum(p.numel() for p in self.params)  # a DTensor's numel is the whole tensor's

    def micro_batches(self, minibatch, size: int | None) -> Iterator[tuple[object, bool]]:
        """This process's micro-batches, then zero-weight passes up to the most any process
        holds: every process runs as many passes (each a collective under sharded weights)."""
        parts = minibatch.split(size or len(minibatch)) if len(minibatch) else []
        count = torch.tensor([len(parts)])
        self.dist.all_reduce(count, op=self.dist.ReduceOp.MAX)  # before the first pass, as every process does
        for k, part in enumerate(parts):
            yield part, k == len(parts) - 1
        for _ in range(int(count) - len(parts)):
            self.idle_pass()

    def idle_pass(self) -> None:
        """One token through the whole model, times 0: every unit's all-gathers and reduce-scatters."""
        (self.policy.logprobs(self.idle).sum() * 0.0).backward()

    def weights_checksum(self) -> torch.Tensor:
        """Each weight exists once (sharded): nothing to compare."""
        return torch.zeros(0, dtype=torch.float64)

    @contextlib.contextmanager
    def full_weights(self):
        """Gather every unit (one all-gather each) and keep them until the block ends (re-entrant)."""
        self._gathered += 1
        try:
            if self._gathered == 1:
                for layer in self.layers:
                    layer.set_reshard_after_forward(False, recurse=False)
                for unit in self.units:
                    unit.unshard()
            yield
        finally:
            self._gathered -= 1
            if self._gathered == 0:
                for unit in self.units:
                    unit.reshard()
                for layer in self.layers:
                    layer.set_reshard_after_forward(self.settings.reshard_after_forward, recurse=False)

    def save_model(self, policy, path) -> None:
        """The full weights gathered onto the main process (shard by shard, to the CPU), which writes them."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(policy.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.is_main:
            policy.save_model(path, state_dict=full)

    def state_dict(self) -> dict:
        """The optimizer's full state on the main process (gathered shard by shard; the others get {})."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = {"optimizer": get_optimizer_state_dict(self.root, self.optimizer, options=full)}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Every process loaded the full state; each keeps its shard of it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.root, self.optimizer, state["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
