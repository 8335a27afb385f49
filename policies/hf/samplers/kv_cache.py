"""``policy.sampler=hf``: batched sampling with a KV cache, reproducible from a CPU ``torch.Generator``.

``model.generate`` does not take a generator, so this is our own loop: one prefill over the
left-padded prompts, then one token per step for every row until each row has produced a
stop token or the budget is spent. The caller draws the uniform noise of every step up front
from its generator on the CPU ([max_new_tokens, B]) and tokens are chosen by inverse CDF, so a
seed gives the same tokens on any device, in any number of passes, and the generator always
advances by the same amount.
"""

from __future__ import annotations

import attrs
import torch

from algorithms.registry import NoParams
from policies.hf.loading import cache_kwarg
from policies.hf.samplers.base import SAMPLERS, Samples
from policies.hf.samplers.decode import KVDecoder, supports


@attrs.frozen
class Generation:
    tokens: torch.Tensor
    """[B, T] long: sampled ids, right-padded with the pad id (T <= max_new_tokens)."""
    mask: torch.Tensor
    """[B, T] float: 1 up to and including the stop token."""
    logp: torch.Tensor
    """[B, T] float32: log-prob of each token under logits / temperature (before top-k / top-p), 0 on padding."""
    entropy: torch.Tensor
    """[B, T] float32: entropy of softmax(logits / temperature) at each step, 0 on padding."""
    truncated: torch.Tensor
    """[B] bool: no stop token within the budget."""


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """[B, V] logits with everything outside the top-k and the top-p nucleus set to -inf."""
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = ordered.softmax(dim=-1)
        outside = probs.cumsum(dim=-1) - probs > top_p  # mass before this token already reaches top_p
        logits = logits.masked_fill(outside.scatter(-1, order, outside), float("-inf"))
    return logits


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """[B] index i with cdf[i - 1] <= u * total < cdf[i] for ``probs`` [B, V] and ``u`` [B] in [0, 1)."""
    cdf = probs.double().cumsum(dim=-1)  # (B, V); float64 so 150k-token vocabularies sum exactly enough
    target = (u.double() * cdf[:, -1]).unsqueeze(-1)  # (B, 1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)


class TransformersDecoder:
    """``decoder(token [B], position [B, 1]) -> logits [B, V]`` through the model's own forward,
    continuing the prefill in ``cache`` (P prompts, ``attention`` [P, S]), G rows per prompt."""

    def __init__(self, model, cache, attention: torch.Tensor, group_size: int):
        self.model, self.cache, self.group_size = model, cache, group_size
        self.attention = attention.repeat_interleave(group_size, dim=0)  # (B, S), grows by one column per step
        self.repeated = False

    def __call__(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        if not self.repeated:  # (B, ...) prompt-major, only once a second token is due
            self.cache.batch_repeat_interleave(self.group_size)
            self.repeated = True
        self.attention = torch.cat([self.attention, torch.ones_like(self.attention[:, :1])], dim=1)
        return self.model(input_ids=token[:, None], attention_mask=self.attention, position_ids=position,
                          **cache_kwarg(self.model, self.cache), use_cache=True).logits[:, -1]


@torch.no_grad()
def generate(model, prompt_tokens: torch.Tensor, prompt_mask: torch.Tensor, group_size: int, noise: torch.Tensor, *,
             stop_ids: list[int], pad_id: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             min_new_tokens: int = 0, fast: bool = True) -> Generation:
    """Sample ``group_size`` continuations of each of ``prompt_tokens`` [P, S] (left-padded,
    ``prompt_mask`` [P, S]): B = P * G rows, prompt-major, at most ``max_new_tokens`` each with
    ``noise`` [max_new_tokens, B] uniform in [0, 1). Each prompt is prefilled once and its
    cache shared by its G rows. With ``fast`` (and a model ``policies.hf.samplers.decode`` covers) the
    tokens after the first are decoded by ``KVDecoder``, else by transformers' forward: the
    same logits either way.

    ``model`` is a causal LM in eval mode; the returned tensors are on the CPU.
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    b = prompt_tokens.shape[0] * group_size
    max_new_tokens = noise.shape[0]
    noise = noise.to(device)
    stops = torch.tensor(stop_ids, device=device)
    attention = prompt_mask.to(device=device, dtype=torch.long)  # (P, S)
    positions = (attention.cumsum(-1) - 1).clamp_min(0)  # left padding: real tokens count from 0
    cache = DynamicCache(config=model.config)
    out = model(input_ids=prompt_tokens.to(device), attention_mask=attention, position_ids=positions,
                **cache_kwarg(model, cache), use_cache=True, logits_to_keep=1)
    decode = (KVDecoder(model, cache, attention, group_size, max_new_tokens - 1) if fast and supports(model)
              else TransformersDecoder(model, cache, attention, group_size))
    position = positions[:, -1:].repeat_interleave(group_size, dim=0) + 1  # (B, 1)
    logits = out.logits[:, -1].repeat_interleave(group_size, dim=0)  # (B, V)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    steps: list[tuple[torch.Tensor, ...]] = []
    for t in range(max_new_tokens):
        logits = logits.float() / temperature  # (B, V)
        if t < min_new_tokens:
            logits[:, stops] = float("-inf")
        logp = logits.log_softmax(dim=-1)
        entropy = -(logp.exp() * logp).nan_to_num().sum(-1)  # (B,); 0 * -inf counts as 0
        token = inverse_cdf(filter_logits(logits, top_k, top_p).softmax(dim=-1), noise[t])
        token = torch.where(done, torch.full_like(token, pad_id), token)  # (B,)
        steps.append((token, (~done).float(), logp.gather(-1, token[:, None]).squeeze(-1), entropy))
        done = done | torch.isin(token, stops)
        if t + 1 == max_new_tokens or bool(done.all()):  # one host sync per token
            break
        logits = decode(token, position)
        position = position + 1
    tokens, mask, logp, entropy = (torch.stack(x, dim=1).cpu() for x in zip(*steps))  # each (B, T)
    zero = torch.zeros(())
    return Generation(tokens=tokens, mask=mask, logp=torch.where(mask.bool(), logp, zero),
                      entropy=torch.where(mask.bool(), entropy, zero), truncated=~done.cpu())


@SAMPLERS.register("hf", NoParams)
class KVCacheSampler:
    """Our KV-cache loop on the training weights (``generate``): nothing to push after updates."""

    separate_weights = False
    multi_process = True

    def __init__(self, params: NoParams = NoParams()):
        self.params = params

    def start(self, policy, model_path: str) -> None:
        pass

    def sample(self, policy, prompt_ids, prompt_tokens: torch.Tensor, prompt_mask: torch.Tensor, group_size: int,
               generator: torch.Generator) -> Samples:
        """``policy.params.generation_batch`` responses per pass; the noise of every pass is drawn
        up front, so the tokens do not depend on the passes."""
        p = policy.params
        num_prompts = prompt_tokens.shape[0]
        per_pass = max(1, (p.generation_batch or num_prompts * group_size) // group_size)  # prompts per pass
        noise = torch.rand(p.max_new_tokens, num_prompts * group_size, generator=generator)  # (T_max, B), CPU
        policy.causal.eval()
        with policy.autocast():
            parts = [generate(policy.causal, prompt_tokens[i:i + per_pass], prompt_mask[i:i + per_pass], group_size,
                              noise[:, i * group_size:(i + per_pass) * group_size], stop_ids=policy.stop_ids,
                              pad_id=policy.tokenizer.pad_token_id, temperature=p.temperature, top_k=p.top_k,
                              top_p=p.top_p, min_new_tokens=p.min_new_tokens)
                     for i in range(0, num_prompts, per_pass)]
        policy.causal.train()
        tokens, mask, logp, entropy = (cat_right([getattr(g, f) for g in parts]) for f in ("tokens", "mask", "logp", "entropy"))
        return Samples(tokens, mask, logp, torch.cat([g.truncated for g in parts]), entropy)

    def after_update(self, policy) -> None:
        pass

    def weights_loaded(self, policy) -> None:
        pass

    def close(self) -> None:
        pass


def cat_right(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate [b_i, T_i] blocks along dim 0, right-padding each to the widest T with 0."""
    width = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])
