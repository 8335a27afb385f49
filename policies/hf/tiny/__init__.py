"""``policy=tiny-qwen3``: a Qwen3 small enough for two CPU cores, with a character tokenizer.

Built once into a cache folder (``policy.model_path``, default ``~/.cache/rlvr-sim/tiny-qwen3``):

    <cache>/base                  random init: Qwen3Config + char tokenizer + chat template (``model``)
    <cache>/warm-<hash>           supervised warm start on arithmetic (hash of its settings; ``warm_start``)

both written atomically (temporary folder + rename) and reused, then loaded through the
same ``from_pretrained`` code as Qwen3-8B.
"""

from __future__ import annotations

import attrs
import torch

from algorithms.registry import build_params
from policies.hf import HFParams, check_sampler_available
from policies.hf.tiny.model import TINY_CONFIG, build_tiny_qwen3, char_tokenizer
from policies.hf.tiny.warm_start import (WarmStartParams, ensure_tiny_qwen3, target_loss, warm_start,
                                         warm_start_target)
from policies.registry import POLICIES


def _warm(value) -> WarmStartParams:
    return value if isinstance(value, WarmStartParams) else build_params(WarmStartParams, dict(value or {}),
                                                                         "policy.warm_start")


@attrs.frozen
class TinyQwen3Params(HFParams):
    warm_start: WarmStartParams = attrs.field(factory=WarmStartParams, converter=_warm)
    """Supervised warm start (built once, cached under ``model_path``)."""


class TinyQwen3Builder:
    """Tiny Qwen3 with a char tokenizer, warm-started on arithmetic (``model_path``: its cache folder)."""

    def __init__(self, params: TinyQwen3Params):
        self.params = params

    def __call__(self, task, reference: bool = False):
        from policies.hf.loading import main_process_first, pick_device
        from policies.hf.policy import load_policy

        check_sampler_available(self.params)  # before the warm start, which may train for minutes
        if self.params.num_threads is not None:  # before the warm start, too
            torch.set_num_threads(self.params.num_threads)
        with main_process_first():  # several processes: one builds the cache, the others load it
            folder = ensure_tiny_qwen3(self.params.model_path, self.params.warm_start, self.params.chat_template,
                                       pick_device(self.params.device))  # on the policy's device
        return load_policy(attrs.evolve(self.params, model_path=str(folder)), reference)


POLICIES.register("tiny-qwen3", TinyQwen3Params)(TinyQwen3Builder)


__all__ = ["TINY_CONFIG", "TinyQwen3Builder", "TinyQwen3Params", "WarmStartParams", "build_tiny_qwen3",
           "char_tokenizer", "ensure_tiny_qwen3", "target_loss", "warm_start", "warm_start_target"]
