"""The ``Sampler`` protocol and its registry: who generates an ``HFPolicy``'s responses.

    policy.sampler=hf                          our KV-cache loop on the training weights (kv_cache.py)
    policy.sampler=vllm                        a colocated vLLM engine (vllm/), weights pushed after updates
    policy.sampler.name=vllm policy.sampler.sync_every=2      a sampler's settings beside its name

A sampler is one class registered in ``SAMPLERS`` with its settings (an attrs class; the
class is built with them). Its class attribute ``separate_weights`` says whether it samples
from its own copy of the weights: its log-probs then go to ``Rollout.sampler_logp``, and the
PPO ratio's ``old_logp`` is recomputed by the trainer's model. Every sampler returns ``Samples``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs
import torch

from algorithms.registry import Registry

SAMPLERS = Registry("sampler", "Sampler(params): start(policy, model_path), sample(...) -> Samples")


@attrs.frozen
class Samples:
    """``group_size`` responses per prompt, prompt-major (response b answers prompt b // G), on the CPU."""

    tokens: torch.Tensor
    """[B, T] long: sampled ids, right-padded with the pad id."""
    mask: torch.Tensor
    """[B, T] float: 1 up to and including the stop token."""
    logp: torch.Tensor
    """[B, T] float: log-prob of each token under the distribution it was drawn from
    (logits / temperature), 0 on padding."""
    truncated: torch.Tensor
    """[B] bool: no stop token within the budget."""
    entropy: torch.Tensor | None = None
    """[B, T] entropy of the sampling distribution at each token, where the sampler knows it."""


@runtime_checkable
class Sampler(Protocol):
    separate_weights: bool
    """Its own copy of the weights: its log-probs are ``sampler_logp``, pushed weights after updates."""
    multi_process: bool
    """Whether each of several data-parallel processes may run one."""

    def start(self, policy, model_path: str) -> None:
        """Once, after the policy's model is loaded from ``model_path``."""
        ...

    def sample(self, policy, prompt_ids: Sequence[Sequence[int]], prompt_tokens: torch.Tensor,
               prompt_mask: torch.Tensor, group_size: int, generator: torch.Generator) -> Samples:
        """Responses to prompts ``prompt_ids`` (also as left-padded ``prompt_tokens`` / ``prompt_mask``
        [P, S]); random draws come from ``generator`` (a run is reproducible from its seed).
        ``policy`` holds the model, tokenizer and generation settings (``policy.params``)."""
        ...

    def after_update(self, policy) -> None:
        """After each training step (a separate engine takes the new weights here)."""
        ...

    def weights_loaded(self, policy) -> None:
        """After a checkpoint restored the policy's weights."""
        ...

    def close(self) -> None: ...


def separate_weights(name: str) -> bool:
    """Whether the registered sampler ``name`` samples from its own copy of the weights."""
    return bool(SAMPLERS.entry(name, "policy.sampler").target.separate_weights)
