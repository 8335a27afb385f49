"""Transformers backend: a causal LM loaded with ``from_pretrained(policy.model_path)``.

``policy=hf`` (and the presets ``qwen3-4b``, ``qwen3-8b``, ``llama-3.2-3b``, ``tiny-qwen3``)
build an ``HFPolicy`` (``policies.hf.policy``): batched sampling with its own KV-cache loop
(reproducible from the trainer's generator), per-token log-probs in chunks so that the
[B, T, V] float32 logits never exist at once, a frozen reference only when the KL penalty
is on, optional LoRA. Who generates is ``policy.sampler`` (``policies.hf.samplers``: our
KV-cache loop, or a colocated vLLM engine that takes the trainer's weights after each update).
This module holds only the config and the registration, so importing ``policies`` does not
import transformers or vLLM.
"""

from __future__ import annotations

from typing import Any

import attrs

from algorithms.registry import ConfigError, FieldError, between, build_params, gt, integer, one_of
from policies.hf.samplers import SAMPLERS, separate_weights
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


def _registered_sampler(inst, attribute, value):
    if value not in SAMPLERS.names():
        raise FieldError(attribute.name, f"unknown sampler {value!r}; valid: {', '.join(SAMPLERS.names())}")


def check_sampler_available(params: HFParams) -> None:
    """Fail at start, before any weights are built or loaded, when the chosen sampler cannot run here."""
    check = getattr(SAMPLERS.entry(params.sampler, "policy.sampler").target, "check_available", None)
    if check is not None:
        check()


def _at_most_max_new_tokens(inst, attribute, value):
    if value > inst.max_new_tokens:
        raise FieldError(attribute.name, f"must be <= max_new_tokens ({inst.max_new_tokens}), got {value}")


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
    min_new_tokens: int = attrs.field(default=0, validator=[integer(0), _at_most_max_new_tokens])
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
    sampler: str = attrs.field(default="hf", validator=_registered_sampler)
    """Who generates (``policies.hf.samplers``): ``hf`` (our KV-cache loop on the training
    weights), ``vllm`` (a colocated vLLM engine, weights pushed after updates; its log-probs go
    to ``Rollout.sampler_logp``), or any registered sampler. Its settings: ``policy.<name>.*``."""
    sampler_settings: dict = attrs.field(factory=dict, converter=dict)
    """Settings of the samplers, by name: the config's ``policy.<sampler name>`` sections
    (``policy.vllm.sync_every=2``), collected by ``from_config`` and validated here."""

    def __attrs_post_init__(self):
        for name, settings in self.sampler_settings.items():
            build_params(SAMPLERS.entry(name).params, dict(settings or {}), f"policy.{name}")
        if separate_weights(self.sampler) and self.old_logp != "recompute":
            raise FieldError("old_logp", f"must be recompute with sampler={self.sampler}: the PPO ratio's "
                                         "denominator is the trainer's log-prob; the engine's goes to sampler_logp")

    @classmethod
    def from_config(cls, cfg: dict[str, Any], where: str):
        """Build from ``policy.*``: sections named after registered samplers go to ``sampler_settings``."""
        cfg = dict(cfg)
        settings = {name: cfg.pop(name) for name in SAMPLERS.names() if name in cfg}
        return build_params(cls, {**cfg, "sampler_settings": settings}, where)

    def build_sampler(self):
        """The sampler these settings name (not started)."""
        entry = SAMPLERS.entry(self.sampler, "policy.sampler")
        return entry.target(build_params(entry.params, dict(self.sampler_settings.get(self.sampler) or {}),
                                         f"policy.{self.sampler}"))


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

__all__ = ["HFBuilder", "HFParams", "LoraParams", "check_sampler_available"]
