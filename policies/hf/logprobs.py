"""Per-token log-probs of response tokens without the [B, T, V] float32 logits.

The decoder trunk runs once over prompt + response; the LM head, log-softmax and gather run
over chunks of at most ``chunk`` response tokens (padding skipped), each chunk under
``torch.utils.checkpoint`` so its logits are freed after the forward and recomputed in the
backward. The largest block alive at any time is one chunk's [chunk, V] float32 logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from policies.hf.loading import cache_kwarg


def head_logprobs(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """[n] log softmax(h W^T + b)[target] / temperature for ``hidden`` [n, H], in float32."""
    logits = F.linear(hidden, weight, bias).float() / temperature  # (n, V)
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(dim=-1)


def chunked_head_logprobs(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor, temperature: float,
                          chunk: int) -> torch.Tensor:
    """[n] ``head_logprobs`` over ``hidden`` [n, H] in chunks of ``chunk`` rows; with grad,
    each chunk is checkpointed (its logits recomputed in backward)."""
    track = torch.is_grad_enabled() and (hidden.requires_grad or head.weight.requires_grad)
    parts = []
    for start in range(0, hidden.shape[0], chunk):
        args = (hidden[start:start + chunk], head.weight, head.bias, targets[start:start + chunk], temperature)
        parts.append(checkpoint(head_logprobs, *args, use_reentrant=False) if track else head_logprobs(*args))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def response_logprobs(causal, prompt_tokens: torch.Tensor, prompt_mask: torch.Tensor, tokens: torch.Tensor,
                      mask: torch.Tensor, *, temperature: float, chunk: int,
                      share_prompts: bool = True) -> torch.Tensor:
    """[B, T] float32 log-probs of ``tokens`` [B, T] (right-padded, ``mask``) after
    ``prompt_tokens`` [B, S] (left-padded, ``prompt_mask``); 0 on padding.

    Columns that are padding in every row are dropped first; position ids count real tokens
    only, as in sampling. With ``share_prompts`` each distinct prompt runs through the trunk
    once and its keys / values are shared by every response to it (a group of G responses
    costs one prompt pass, not G); gradients flow through the shared pass. Not with
    transformers' gradient checkpointing, which drops the cache: then every row is one
    prompt + response sequence.
    """
    if prompt_mask.shape[1] == 0 or not prompt_mask.bool().any(dim=1).all():
        raise ValueError("logprobs: a response without a prompt token; the first response token needs a context")
    device = next(causal.parameters()).device
    width = tokens.shape[1]
    used = max(1, int(mask.sum(dim=1).max()))  # response columns holding a token somewhere
    first = int(prompt_mask.bool().any(dim=0).long().argmax())  # first prompt column holding a token somewhere
    prompt_tokens, prompt_mask = prompt_tokens[:, first:].to(device), prompt_mask[:, first:].to(device)
    tokens, mask = tokens[:, :used].to(device), mask[:, :used].to(device)
    trunk = causal.get_decoder()
    if share_prompts:
        hidden = _shared_prompt_hidden(trunk, prompt_tokens, prompt_mask, tokens, mask)
    else:
        s = prompt_tokens.shape[1]
        attention = torch.cat([prompt_mask, mask], dim=1).long()  # (B, S' + T')
        hidden = trunk(input_ids=torch.cat([prompt_tokens, tokens], dim=1), attention_mask=attention,
                       position_ids=(attention.cumsum(-1) - 1).clamp_min(0), use_cache=False).last_hidden_state
        hidden = hidden[:, s - 1: s - 1 + used]  # (B, T', H): the states that predict the response tokens
    valid = mask.bool()  # (B, T')
    values = chunked_head_logprobs(hidden[valid], causal.get_output_embeddings(), tokens[valid], temperature,
                                   chunk)  # (N_valid,)
    out = torch.zeros(valid.shape, dtype=torch.float32, device=device).masked_scatter(valid, values)  # (B, T')
    return F.pad(out, (0, width - used))


def _shared_prompt_hidden(trunk, prompt_tokens, prompt_mask, tokens, mask) -> torch.Tensor:
    """[B, T', H] states that predict each response token, with one trunk pass per distinct prompt."""
    from transformers import DynamicCache

    rows = torch.cat([prompt_tokens, prompt_mask.long()], dim=1)
    unique, inverse = torch.unique(rows, dim=0, return_inverse=True)  # (U, 2 S'), (B,)
    s = prompt_tokens.shape[1]
    u_mask = unique[:, s:]
    cache = DynamicCache(config=trunk.config)
    prompt_hidden = trunk(input_ids=unique[:, :s], attention_mask=u_mask, **cache_kwarg(trunk, cache), use_cache=True,
                          position_ids=(u_mask.cumsum(-1) - 1).clamp_min(0)).last_hidden_state  # (U, S', H)
    cache.batch_select_indices(inverse)  # every response sees its prompt's keys / values (with their gradients)
    start = prompt_mask.long().sum(dim=1, keepdim=True)  # (B, 1): the first response position
    positions = start + torch.arange(tokens.shape[1], device=tokens.device)  # (B, T')
    response_hidden = trunk(input_ids=tokens, attention_mask=torch.cat([prompt_mask, mask], dim=1).long(),
                            position_ids=positions, **cache_kwarg(trunk, cache), use_cache=True).last_hidden_state
    # left padding: the last prompt column is real in every row and predicts the first response token
    return torch.cat([prompt_hidden[inverse, -1:], response_hidden[:, :-1]], dim=1)  # (B, T', H)


class ResponseScorer(torch.nn.Module):
    """``response_logprobs`` of ``causal`` as a module: the training pass has one entry point
    whose forward covers every weight it uses (trunk and LM head), which is what FSDP shards
    as its root (``experiments/parallel/fsdp.py``). Holds ``causal`` as its only child."""

    def __init__(self, causal, *, temperature: float, chunk: int, share_prompts: bool):
        super().__init__()
        self.causal = causal
        self.temperature, self.chunk, self.share_prompts = temperature, chunk, share_prompts

    def forward(self, prompt_tokens: torch.Tensor, prompt_mask: torch.Tensor, tokens: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """[B, T] float32 log-probs of ``tokens`` [B, T] after ``prompt_tokens`` [B, S]."""
        return response_logprobs(self.causal, prompt_tokens, prompt_mask, tokens, mask, temperature=self.temperature,
                                 chunk=self.chunk, share_prompts=self.share_prompts)
