"""One-token decoding steps for Llama-family causal LMs without transformers' per-call machinery.

On a small model a transformers forward of one token is mostly Python: keyword-deprecation
and output-capturing wrappers on every module, a mask rebuilt per call, a ``torch.cat`` per
layer to grow the cache (the tiny Qwen3, 64 rows, one CPU thread: ~12 ms a token, against
~8 ms here; what is left is matmuls, SDPA and the norms' elementwise ops). ``KVDecoder`` runs the same modules'
weights through the same ops, in the same order and on the same shapes (the norms, the
MLP and the rotary table are the model's own modules, attention is transformers' own
attention function with the mask transformers would pass), so its logits equal the
model's bit for bit (``tests/test_hf_policy.py`` checks, with and without padding). Keys and
values live in buffers allocated once for the whole generation, written one column per
step; the mask is one boolean column per step. Models it does not cover (``supports``)
decode with transformers' forward.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

FAMILIES = ("llama", "qwen2", "qwen3")
"""``config.model_type`` values whose decoder layers have the structure ``KVDecoder`` follows."""


def supports(model) -> bool:
    """Whether ``KVDecoder`` reproduces this causal LM: a Llama-family decoder with only full
    attention, SDPA, and plain ``nn.Linear`` projections (a LoRA or quantized layer is not)."""
    cfg = model.config
    layers = getattr(getattr(model, "model", None), "layers", None)
    if cfg.model_type not in FAMILIES or layers is None or cfg._attn_implementation != "sdpa":
        return False
    if set(getattr(cfg, "layer_types", None) or ["full_attention"]) != {"full_attention"}:
        return False
    projections = [getattr(layer.self_attn, name, None) for layer in layers
                   for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
    return all(type(p) is torch.nn.Linear for p in projections)


class KVDecoder:
    """``decoder(token [B], position [B, 1]) -> logits [B, V]`` of the next token, continuing
    a prefill. ``cache`` holds the prefill's keys / values for P prompts ([P, H_kv, S, D] per
    layer), ``attention`` [P, S] its padding mask; each prompt's row serves ``group_size``
    consecutive rows (prompt-major), for up to ``steps`` more tokens."""

    def __init__(self, model, cache, attention: torch.Tensor, group_size: int, steps: int):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        trunk = model.model
        self.embed, self.rotary, self.norm, self.layers = trunk.embed_tokens, trunk.rotary_emb, trunk.norm, trunk.layers
        self.head = model.get_output_embeddings()
        self.attend = ALL_ATTENTION_FUNCTIONS.get_interface(model.config._attn_implementation, None)
        self.rotate = sys.modules[type(self.layers[0].self_attn).__module__].apply_rotary_pos_emb
        p, s = attention.shape
        self.length = s
        self.keys, self.values = [], []
        for layer in cache.layers:  # (B, H_kv, S + steps, D): the prefill's columns, then room for each step
            for stored, buffers in ((layer.keys, self.keys), (layer.values, self.values)):
                buffer = stored.new_empty(p * group_size, stored.shape[1], s + steps, stored.shape[3])
                buffer[:, :, :s] = stored.repeat_interleave(group_size, dim=0)
                buffers.append(buffer)
        self.mask = None  # transformers passes no mask to SDPA when no row is padded (one query token)
        if not bool(attention.bool().all()):
            self.mask = torch.ones(p * group_size, 1, 1, s + steps, dtype=torch.bool, device=attention.device)
            self.mask[:, 0, 0, :s] = attention.bool().repeat_interleave(group_size, dim=0)

    def __call__(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        t = self.length
        self.length += 1
        mask = None if self.mask is None else self.mask[..., :t + 1]  # (B, 1, 1, t + 1)
        x = self.embed(token[:, None])  # (B, 1, H)
        cos, sin = self.rotary(x, position)
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = _heads(attn.q_proj, getattr(attn, "q_norm", None), h, attn.head_dim)  # (B, H, 1, D)
            k = _heads(attn.k_proj, getattr(attn, "k_norm", None), h, attn.head_dim)  # (B, H_kv, 1, D)
            q, k = self.rotate(q, k, cos, sin)
            keys[:, :, t] = k[:, :, 0]
            values[:, :, t] = _heads(attn.v_proj, None, h, attn.head_dim)[:, :, 0]
            out, _ = self.attend(attn, q, keys[:, :, :t + 1], values[:, :, :t + 1], mask, dropout=0.0,
                                 scaling=attn.scaling)  # (B, 1, H, D)
            x = x + F.linear(out.reshape(*x.shape[:2], -1).contiguous(), attn.o_proj.weight, attn.o_proj.bias)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.head(self.norm(x))[:, -1]  # (B, V)


def _heads(proj: torch.nn.Linear, norm, h: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B, heads, 1, D] projection of ``h`` [B, 1, H], per-head normed where the model norms it."""
    x = F.linear(h, proj.weight, proj.bias).view(*h.shape[:2], -1, head_dim)
    return (x if norm is None else norm(x)).transpose(1, 2)
