"""``policy.sampler=vllm``: a colocated vLLM engine samples for an ``HFPolicy`` and takes its weights.

The engine (``policies.vllm_engine.VllmEngine``) runs in the trainer's process and starts from
the same checkpoint folder as the trainer's model. After every ``sync_every``-th training step
(``HFPolicy.sync_sampler``, which the trainer calls after each update) the trainer's parameters
are pushed into it by reference, without a restart.

Log-probs. The engine reports ``logprobs_mode="processed_logprobs"``: the log-prob of each
sampled token under the distribution it was drawn from (logits / temperature, stop tokens masked
before ``min_new_tokens``, then top-k / top-p renormalised). They go into
``Rollout.sampler_logp``; the PPO ratio's ``old_logp`` is recomputed by a no-grad pass of the
trainer's model (the same ``logprobs`` code as training), so the ratio is exactly 1 on-policy and
the sampler/trainer mismatch is visible (``sampler/*`` metrics) and correctable (``algo.tis``).
With top-k or top-p the two differ by design (the sampler's distribution is truncated); without,
only by kernel numerics (~1e-6 in float32) and by weights not yet pushed (``sync_every`` > 1).

LoRA: the engine serves the merged weights W + (alpha / r) B A of every adapted layer, computed at
each push without touching the trainer's model (no merge / unmerge round trip in its weights).

Sleep (``policy.vllm.sleep``, a GPU only): the engine sleeps after sampling (weights offloaded to
the CPU, KV cache freed) and wakes before the next push or sampling.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import torch

from policies.hf import VllmParams


class VllmSampler:
    """Sampling and weight pushes for one policy; ``engine`` is the running ``VllmEngine``."""

    def __init__(self, model_path: str, params: VllmParams, compute_dtype: torch.dtype):
        from policies.vllm_engine import VllmEngine

        self.params = params
        dtype = params.dtype if params.dtype != "auto" else (
            "float32" if compute_dtype == torch.float32 else "bfloat16")
        self.engine = VllmEngine(model_path, dtype=dtype, gpu_memory_utilization=params.gpu_memory_utilization,
                                 enforce_eager=params.enforce_eager, max_model_len=params.max_model_len,
                                 seed=params.seed, kv_cache_gib=params.kv_cache_gib,
                                 logprobs_mode="processed_logprobs", enable_sleep_mode=params.sleep,
                                 **params.llm_kwargs)
        self.updates = 0
        """Training steps since the engine started (``after_update`` calls)."""
        self.pushes = 0
        self.push_seconds = 0.0
        """Wall-clock seconds of the last push."""

    def sample(self, prompt_ids: Sequence[Sequence[int]], group_size: int, generator: torch.Generator, *,
               max_new_tokens: int, temperature: float, top_k: int, top_p: float, min_new_tokens: int,
               stop_ids: Sequence[int], pad_id: int) -> tuple[torch.Tensor, ...]:
        """``group_size`` responses per prompt, prompt-major: tokens [B, T] long, mask [B, T],
        sampler log-probs [B, T] (0 on padding) and truncated [B] bool (no stop token within the
        budget). One seed is drawn from ``generator``, so a run is reproducible from its seed (the
        engine's batches, hence its draws, depend on its prefix cache: a resumed run samples other
        tokens than the uninterrupted one)."""
        from policies.vllm_engine import pad_completions

        seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
        self.engine.wake_up()
        # Unseeded requests: the in-process engine draws from the global generators, seeded here
        # and restored after. (Per-request seeds fail on the CPU once a batch's prompts exceed the
        # engine's token budget: a partly prefilled request rewinds its generator's offset, which
        # CPU generators do not have; they also force vLLM's slower sampling path on a GPU.)
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
            torch.manual_seed(seed)
            groups = self.engine.generate(prompt_ids, n=group_size, max_tokens=max_new_tokens,
                                          temperature=temperature, top_p=top_p, top_k=top_k,
                                          stop_token_ids=stop_ids, min_tokens=min_new_tokens)
        if self.params.sleep:
            self.engine.sleep()
        tokens, logp, mask = pad_completions(groups, pad_id)  # (B, T) each
        truncated = torch.tensor([c.finish_reason == "length" for group in groups for c in group])  # (B,)
        return tokens, mask, logp, truncated

    def after_update(self, model: torch.nn.Module) -> None:
        """Count a training step; push ``model``'s weights on every ``sync_every``-th."""
        self.updates += 1
        if self.updates % self.params.sync_every == 0:
            self.push(model)

    def push(self, model: torch.nn.Module) -> None:
        """Load ``model``'s weights (HF names; LoRA adapters merged) into the running engine."""
        start = time.perf_counter()
        self.engine.wake_up()
        self.engine.push_weights(checkpoint_weights(model))
        self.pushes += 1
        self.push_seconds = time.perf_counter() - start

    def close(self) -> None:
        self.engine.close()


@torch.no_grad()
def checkpoint_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``model``'s weights under their checkpoint names. A causal LM with peft LoRA layers injected
    (``PeftModel.get_base_model()``) gives each adapted layer's merged weight W + sum of its active
    adapters' deltas, under the layer's own name; the adapters and ``base_layer`` names are left out."""
    lora_layers = {}
    if any(".lora_" in name for name, _ in model.named_parameters()):
        from peft.tuners.lora import LoraLayer

        lora_layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    for name, module in lora_layers.items():
        base = module.get_base_layer()
        delta = sum(module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A)
        yield f"{name}.weight", base.weight + delta
        if base.bias is not None:
            yield f"{name}.bias", base.bias
    for name, param in model.named_parameters():
        if ".lora_" not in name and ".base_layer." not in name:
            yield name, param
