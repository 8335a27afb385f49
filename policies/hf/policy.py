"""``HFPolicy``: the ``Policy`` protocol over a transformers causal LM."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch.distributed.tensor.experimental import implicit_replication

from policies.base import PromptBatch, Rollout
from policies.hf import HFParams
from policies.hf.loading import (compute_dtype, encode_prompt, frozen_copy, load_model, load_tokenizer, pick_device,
                                 resolve_model_path, stop_token_ids)
from policies.hf.logprobs import ResponseScorer
from policies.hf.samplers import Sampler


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, S] ids and mask, each row right-aligned (left padding)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1.0
    return ids, mask


class HFPolicy:
    """A causal LM as a policy. Owns model, tokenizer, chat template and device.

    Rollouts live on the CPU (small integer tensors); ``logprobs`` returns [b, T] on the
    model's device. ``sampler`` generates (``policies.hf.samplers``); ``old_logp`` is filled per
    ``params.old_logp``; a sampler with its own copy of the weights (vLLM) fills
    ``sampler_logp`` with its log-probs instead, and ``old_logp`` is recomputed.
    ``scorer`` is the training pass as one module (what FSDP shards, ``experiments/parallel/fsdp.py``);
    ``model`` is the causal LM it scores with (a PeftModel with LoRA).
    """

    @property
    def multi_process(self) -> bool:
        """Data parallel: each process holds a replica (or, under FSDP, a shard of ``scorer``)
        and samples its share, where the sampler allows it (not yet vLLM's)."""
        return self.sampler.multi_process

    @property
    def separate_sampler(self) -> bool:
        """Samples come from another engine's copy of the weights (their log-probs: ``sampler_logp``)."""
        return self.sampler.separate_weights

    def __init__(self, model, tokenizer, params: HFParams, device: torch.device, dtype: torch.dtype,
                 reference=None, sampler: Sampler | None = None):
        self.model = model  # a PeftModel with LoRA, else the causal LM
        self.causal = model.get_base_model() if params.lora.r > 0 else model
        self.tokenizer = tokenizer
        self.params = params
        self.device = device
        self.dtype = dtype
        self.reference = reference  # frozen copy (KL without LoRA), else None
        self.scorer = self._scorer(self.causal)
        self.reference_scorer = None if reference is None else self._scorer(reference)
        self.sampler = sampler if sampler is not None else params.build_sampler()  # started by load_policy
        self.max_new_tokens = params.max_new_tokens
        self.stop_ids = stop_token_ids(tokenizer, self.causal)
        self._encoded: dict[str, list[int]] = {}
        self.old_logp_from_update = False  # set by defer_old_logp: sample skips the recompute pass

    @property
    def context_length(self) -> int | None:
        """Positions the model attends over, prompt and response together (its config's
        ``max_position_embeddings``; None where it states none)."""
        return getattr(self.causal.config, "max_position_embeddings", None)

    # ------------------------------------------------------------ text
    def encode(self, text: str) -> list[int]:
        """Prompt ids: the chat template's user turn + generation prompt, or the plain text."""
        if text not in self._encoded:
            self._encoded[text] = encode_prompt(self.tokenizer, text, self.params.chat_template,
                                                self.params.chat_template_kwargs)
        return self._encoded[text]

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # ------------------------------------------------------------ protocol
    @torch.no_grad()
    def sample(self, prompts: PromptBatch, group_size: int, generator: torch.Generator) -> Rollout:
        prompt_ids = [self.encode(t) for t in prompts.texts]
        prompt_tokens, prompt_mask = left_pad(prompt_ids, self.tokenizer.pad_token_id)
        out = self.sampler.sample(self, prompt_ids, prompt_tokens, prompt_mask, group_size, generator)
        texts = self.tokenizer.batch_decode([row[m.bool()].tolist() for row, m in zip(out.tokens, out.mask)],
                                            skip_special_tokens=True)
        rollout = Rollout(prompt_index=prompts.index.repeat_interleave(group_size),
                          prompt_tokens=prompt_tokens.repeat_interleave(group_size, dim=0),  # (B, S), prompt-major
                          prompt_mask=prompt_mask.repeat_interleave(group_size, dim=0), tokens=out.tokens,
                          mask=out.mask, old_logp=out.logp, texts=tuple(texts), group_size=group_size,
                          sampler_logp=out.logp if self.sampler.separate_weights else None, entropy=out.entropy,
                          truncated=out.truncated)
        if self.params.old_logp == "recompute" and not self.old_logp_from_update:  # the training pass itself:
            rollout = rollout.with_(old_logp=self.logprobs(rollout).cpu())  # on-policy ratio exactly 1
        return rollout

    def defer_old_logp(self, on: bool = True) -> bool:
        """A trainer whose update is one optimizer step per batch asks for this: its training
        pass then runs on the weights that sampled, so its own log-probs, detached, are exactly
        what ``old_logp=recompute`` computes, where the training pass is float32 on the weights
        that sample and deterministic (no LoRA dropout). ``sample`` then skips the recompute pass
        (``old_logp`` holds the sampler's values until the update replaces them). Returns whether
        it is deferred now."""
        exact = (self.params.old_logp == "recompute" and self.dtype == torch.float32 and not self.separate_sampler
                 and (self.params.lora.r == 0 or self.params.lora.dropout == 0))
        self.old_logp_from_update = on and exact
        return self.old_logp_from_update

    def _scorer(self, causal) -> ResponseScorer:
        return ResponseScorer(causal, temperature=self.params.temperature, chunk=self.params.logprob_chunk,
                              share_prompts=not self.params.gradient_checkpointing)

    def logprobs(self, rollout: Rollout) -> torch.Tensor:
        return self._logprobs(self.scorer, rollout)

    @torch.no_grad()
    def ref_logprobs(self, rollout: Rollout) -> torch.Tensor:
        if self.reference_scorer is not None:
            return self._logprobs(self.reference_scorer, rollout)
        if self.params.lora.r == 0:
            raise RuntimeError("ref_logprobs: this policy was built without a reference (the KL penalty was off)")
        with self.model.disable_adapter():  # LoRA: the base weights are the reference
            return self._logprobs(self.scorer, rollout)

    def _logprobs(self, scorer: ResponseScorer, rollout: Rollout) -> torch.Tensor:
        with self.autocast():
            return scorer(rollout.prompt_tokens, rollout.prompt_mask, rollout.tokens, rollout.mask)

    def sync_sampler(self) -> None:
        """After an update: a sampler with its own copy of the weights takes the new ones (vLLM:
        every ``sync_every``-th call); ours samples on the training weights."""
        self.sampler.after_update(self)

    def parameters(self):
        return (p for p in self.model.parameters() if p.requires_grad)

    def state_dict(self) -> dict:
        """The trainable weights (all of them, or the LoRA adapters), on the CPU."""
        return {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def load_state_dict(self, state: dict) -> None:
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if set(params) != set(state):
            missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
            raise ValueError(f"policy checkpoint does not match the model: missing {missing[:3]}, "
                             f"unexpected {extra[:3]}")
        with torch.no_grad(), implicit_replication():  # a sharded (FSDP) weight takes its shard of the full tensor
            for n, p in params.items():
                p.copy_(state[n])
        self.sampler.weights_loaded(self)  # a resumed run samples with the restored weights

    def save_model(self, path: Path, state_dict: dict | None = None) -> None:
        """``from_pretrained(path)`` loads the trained model (with LoRA: the adapter, whose config
        names the base model; transformers loads it through peft). ``state_dict``: the full
        weights where the model itself holds shards (FSDP gathers them)."""
        self.model.save_pretrained(path, state_dict=state_dict)
        self.tokenizer.save_pretrained(path)


def load_policy(params: HFParams, reference: bool) -> HFPolicy:
    """Check the weights exist (before anything is loaded or written), then load everything."""
    if params.num_threads is not None:
        torch.set_num_threads(params.num_threads)
    path = resolve_model_path(params.model_path, params.allow_download)
    device = pick_device(params.device)
    dtype = compute_dtype(params.dtype, device)
    tokenizer = load_tokenizer(path, params.chat_template)
    model = load_model(path, params, device, dtype)
    ref = frozen_copy(model).to(dtype) if reference and params.lora.r == 0 else None
    policy = HFPolicy(model, tokenizer, params, device, dtype, ref)
    if not Path(path).is_dir():  # a hub id that from_pretrained just downloaded: a sampler reads the folder
        path = resolve_model_path(params.model_path, allow_download=False)
    policy.sampler.start(policy, str(path))  # vLLM: the engine starts from the same checkpoint as the model
    return policy
