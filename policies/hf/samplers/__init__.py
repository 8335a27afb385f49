"""Samplers of ``HFPolicy`` (``policy.sampler``): the protocol and registry (``base``), our
KV-cache loop (``kv_cache``: ``hf``), a colocated vLLM engine (``vllm``). Importing this
package registers them; neither imports transformers or vLLM until it runs."""

from policies.hf.samplers import kv_cache, vllm  # noqa: F401  (register "hf" and "vllm")
from policies.hf.samplers.base import SAMPLERS, Sampler, Samples, separate_weights

__all__ = ["SAMPLERS", "Sampler", "Samples", "separate_weights"]
