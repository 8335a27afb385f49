"""One RL step of a transformers policy on a GPU, by phase: ``python -m experiments.bench.gpu``.

For each model shape (random weights, the tiny Qwen3's character tokenizer, built in memory):
seconds per step of sampling (our KV-cache loop, exactly ``tokens`` new tokens per response),
the no-grad old-log-prob pass (``old_logp=recompute``; skipped on the CPU's float32 path, see
the README), reward (a regex over the texts), update (GRPO's objective over micro-batches, one
AdamW step) and the whole step; sampler new tokens/s; update tokens/s and MFU = 6 N tokens/s
/ peak (N: the weights that multiply, i.e. all but the input embedding; attention's own
FLOPs left out; peak: the GPU's dense bf16 peak from ``PEAK_TFLOPS`` or ``peak_tflops=``);
peak memory of each phase; and one micro-batch's log-prob pass (forward + backward) chunked
(ours) against full [b, T, V] float32 logits, time and peak memory.

    python -m experiments.bench.gpu                          # size=gpu: Qwen3-0.6B's shape, Qwen3-8B's at 4 layers
    python -m experiments.bench.gpu size=toy device=cpu      # the same table at toy size (CI: seconds)

Needs torch, transformers, attrs, pyyaml and this project only (no hydra, gymnasium, math-verify).
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import time
from contextlib import contextmanager

import attrs
import torch

from algorithms.registry import integer, one_of
from experiments.bench.llm import QWEN3_VOCAB
from experiments.cli import parse_args

SHAPES = {  # Qwen3Config fields over the tiny model's (policies.hf.tiny.TINY_CONFIG)
    "0.6b": dict(num_hidden_layers=28, hidden_size=1024, intermediate_size=3072, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "8b-4l": dict(num_hidden_layers=4, hidden_size=4096, intermediate_size=12288, num_attention_heads=32,
                  num_key_value_heads=8, head_dim=128, tie_word_embeddings=False, vocab_size=QWEN3_VOCAB),
    "toy": dict(),
    "toy-vocab": dict(num_hidden_layers=1, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=QWEN3_VOCAB),
}
SIZES = {  # shapes, P prompts, G, new tokens, micro-batch rows
    "gpu": dict(shapes=("0.6b", "8b-4l"), prompts=16, group=8, tokens=512, micro=16),
    "toy": dict(shapes=("toy", "toy-vocab"), prompts=2, group=4, tokens=8, micro=4),
}
PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0}
"""Dense bf16 peak TFLOP/s by device name (NVIDIA's data sheets, SXM unless named; no sparsity)."""


def peak_flops(device: torch.device, explicit: float | None) -> float | None:
    if explicit is not None:
        return explicit * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v * 1e12 for k, v in PEAK_TFLOPS.items() if k in name), None)


def build_policy(shape: str, device: torch.device, args):
    """An ``HFPolicy`` over a random Qwen3 of ``shape``, built on ``device`` (no checkpoint on disk)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from policies.hf import HFParams
    from policies.hf.loading import compute_dtype, stop_token_ids
    from policies.hf.policy import HFPolicy
    from policies.hf.tiny import TINY_CONFIG, char_tokenizer

    tokenizer = char_tokenizer()
    fields = {**TINY_CONFIG, "vocab_size": len(tokenizer), **SHAPES[shape]}
    config = Qwen3Config(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
                         **fields)
    config._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    with device:
        model = Qwen3ForCausalLM(config)
    model.config.use_cache = False
    params = HFParams(model_path=f"<random {shape}>", max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                      old_logp="sampler", device=device.type, dtype=args.dtype, logprob_chunk=args.chunk)
    policy = HFPolicy(model.train(), tokenizer, params, device, compute_dtype(args.dtype, device))
    assert stop_token_ids(tokenizer, model) == policy.stop_ids
    return policy


def prompts(num: int, seed: int):
    from policies.base import PromptBatch

    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(10, 1000, (2, num), generator=g).tolist()
    return PromptBatch(index=torch.arange(num), texts=tuple(f"What is {x} + {y}? Put the answer in \\boxed{{}}."
                                                            for x, y in zip(a, b)))


def rewards(texts, group: int) -> torch.Tensor:
    """[P, G] 1 for a boxed integer, else 0 (a random model has nothing to verify)."""
    return torch.tensor([float(bool(re.search(r"\\boxed\{-?\d+\}", t))) for t in texts]).view(-1, group)


class Meter:
    """Wall seconds and peak memory (GPU: allocated; CPU: process RSS high-water mark) of a phase."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.peak = device, {}, {}

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, name: str):
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        yield
        self.sync()
        self.seconds.setdefault(name, []).append(time.perf_counter() - start)
        peak = (torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        self.peak[name] = max(self.peak.get(name, 0), peak)


def step(policy, algo, optimizer, args, meter: Meter, seed: int) -> dict[str, float]:
    """One RL step by phase; returns its token counts."""
    from algorithms.aggregation import Totals

    with meter("sample"):
        rollout = policy.sample(prompts(args.prompts, seed), args.group, torch.Generator().manual_seed(seed))
    with meter("old_logp"), torch.no_grad():
        rollout = rollout.with_(old_logp=policy.logprobs(rollout).cpu())  # what old_logp=recompute runs
    with meter("reward"):
        r = rewards(rollout.texts, args.group)  # (P, G)
        advantages, _ = algo.reweighter(algo.advantage(r), r)
    with meter("update"):
        rollout = rollout.with_(advantages=advantages.reshape(-1))
        totals = Totals.of(rollout.mask)
        for part in rollout.split(args.micro):
            logp = policy.logprobs(part)
            loss, _ = algo.objective(logp, part.to(logp.device), totals)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(list(policy.parameters()), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    prompt_tokens = float(rollout.prompt_mask[:: args.group].sum())  # each distinct prompt runs once
    return {"new": float(rollout.mask.sum()), "prompt": prompt_tokens}


def logprob_pass(policy, args, meter: Meter) -> dict[str, str]:
    """One micro-batch's log-prob pass, forward + backward: chunked (ours) vs full logits."""
    from policies.hf.logprobs import response_logprobs

    g = torch.Generator().manual_seed(args.seed)
    vocab = policy.causal.config.vocab_size
    b, t = args.micro, args.tokens
    prompt, tokens = torch.randint(0, vocab, (b, 32), generator=g), torch.randint(0, vocab, (b, t), generator=g)
    ones_p, ones_t = torch.ones(b, 32), torch.ones(b, t)
    out = {}
    for variant in ("chunked", "full"):
        try:
            with meter(f"pass_{variant}"), policy.autocast():
                if variant == "chunked":
                    logp = response_logprobs(policy.causal, prompt, ones_p, tokens, ones_t, temperature=1.0,
                                             chunk=args.chunk)
                else:  # the usual way: [b, T, V] float32 logits, log_softmax, gather
                    ids = torch.cat([prompt, tokens], 1).to(policy.device)
                    logits = policy.causal(input_ids=ids, logits_to_keep=t + 1).logits[:, :-1].float()
                    logp = logits.log_softmax(-1).gather(-1, tokens.to(policy.device)[..., None]).squeeze(-1)
                logp.sum().backward()
            out[variant] = f"{meter.seconds[f'pass_{variant}'][-1]:.3f} s, peak {meter.peak[f'pass_{variant}'] / 2**30:.2f} GiB"
        except torch.OutOfMemoryError:
            out[variant] = "out of memory"
        logp = logits = None
        policy.model.zero_grad(set_to_none=True)
        if policy.device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def bench_shape(shape: str, device: torch.device, args) -> dict:
    from algorithms import build_algorithm
    from algorithms.optim import OptimParams, build_optimizer

    policy = build_policy(shape, device, args)
    algo = build_algorithm({"name": "grpo", "advantage": {"name": "group_norm"}, "loss": {"name": "ppo_clip"},
                            "aggregation": {"name": "seq_mean_token_mean"}})
    optimizer = build_optimizer(OptimParams(name="adamw", lr=1e-6, weight_decay=0.0), policy.parameters())
    meter, counts = Meter(device), []
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            meter.seconds = {}
        counts.append(step(policy, algo, optimizer, args, meter, args.seed + i))
    med = {k: statistics.median(v) for k, v in meter.seconds.items()}
    new, prompt = (statistics.mean(c[k] for c in counts[args.warmup:]) for k in ("new", "prompt"))
    embed = policy.causal.get_input_embeddings().weight.numel()
    n = sum(p.numel() for p in policy.parameters()) - embed  # weights that multiply (the head included)
    head = policy.causal.get_output_embeddings().weight.numel()
    flops = 6 * (n * new + (n - head) * prompt)  # the head runs on response tokens only
    peak = peak_flops(device, args.peak_tflops)
    row = {"shape": shape, "params": n + embed, **{f"{k}_s": v for k, v in med.items()},
           "step_s": sum(med[k] for k in ("sample", "old_logp", "reward", "update")),
           "sample_tokens_per_s": new / med["sample"], "update_tokens_per_s": (new + prompt) / med["update"],
           "mfu": None if peak is None else flops / med["update"] / peak,
           **{f"{k}_peak_gib": meter.peak[k] / 2**30 for k in ("sample", "old_logp", "update")},
           "logprob_pass": logprob_pass(policy, args, meter)}
    del policy, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def print_table(rows: list[dict], device: torch.device, args) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = peak_flops(device, args.peak_tflops)
    from policies.hf.loading import compute_dtype

    print(f"\n{name}, {str(compute_dtype(args.dtype, device)).removeprefix('torch.')}: P={args.prompts} x G={args.group}, {args.tokens} new tokens, micro-batches of "
          f"{args.micro}, median of {args.steps} step(s) after {args.warmup}; peak "
          f"{'unknown (peak_tflops=)' if peak is None else f'{peak / 1e12:.1f} TFLOP/s'}; "
          f"memory: {'allocated' if device.type == 'cuda' else 'process RSS high-water mark'}")
    print(f"{'shape':<10}{'params':>8}{'sample':>9}{'old_logp':>9}{'reward':>8}{'update':>9}{'step':>9}"
          f"{'gen tok/s':>11}{'upd tok/s':>11}{'MFU':>7}{'mem GiB s/o/u':>16}")
    for r in rows:
        mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        mem = "/".join(f"{r[f'{k}_peak_gib']:.1f}" for k in ("sample", "old_logp", "update"))
        print(f"{r['shape']:<10}{r['params'] / 1e9:>7.2f}B{r['sample_s']:>9.3f}{r['old_logp_s']:>9.3f}"
              f"{r['reward_s']:>8.3f}{r['update_s']:>9.3f}{r['step_s']:>9.3f}{r['sample_tokens_per_s']:>11.0f}"
              f"{r['update_tokens_per_s']:>11.0f}{mfu:>7}{mem:>16}")
    for r in rows:
        p = r["logprob_pass"]
        print(f"{r['shape']:<10}log-prob pass, {args.micro} x {args.tokens}: chunked {p['chunked']}; full logits {p['full']}")


@attrs.frozen
class GpuBenchOptions:
    size: str = attrs.field(default="gpu", validator=one_of("gpu", "toy"))
    """gpu: Qwen3-0.6B's shape and Qwen3-8B's at 4 layers (151,936 words); toy: the tiny model, seconds on a CPU."""
    device: str = attrs.field(default="auto", validator=one_of("auto", "cpu", "cuda"))
    """Where the model runs (auto: cuda when available)."""
    dtype: str = attrs.field(default="auto", validator=one_of("auto", "float32", "bfloat16"))
    """Compute precision (auto: bfloat16 on a GPU, float32 on the CPU), as policy.dtype."""
    shapes: tuple[str, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(tuple))
    """Shapes to run (default: the size's); any of 0.6b, 8b-4l, toy, toy-vocab."""
    prompts: int | None = attrs.field(default=None, validator=attrs.validators.optional(integer(1)))
    """P (default: the size's)."""
    group: int | None = attrs.field(default=None, validator=attrs.validators.optional(integer(2)))
    """G (default: the size's)."""
    tokens: int | None = attrs.field(default=None, validator=attrs.validators.optional(integer(1)))
    """New tokens per response, exactly (default: the size's)."""
    micro: int | None = attrs.field(default=None, validator=attrs.validators.optional(integer(1)))
    """Responses per forward/backward pass of the update (default: the size's)."""
    chunk: int = attrs.field(default=1024, validator=integer(1))
    """Response tokens per LM-head chunk (policy.logprob_chunk)."""
    warmup: int = attrs.field(default=1, validator=integer(0))
    """Untimed steps first."""
    steps: int = attrs.field(default=2, validator=integer(1))
    """Timed steps (the median is shown)."""
    peak_tflops: float | None = None
    """Dense bf16 peak of the device in TFLOP/s for the MFU (default: from PEAK_TFLOPS by the GPU's name)."""
    seed: int = 0
    """Seed of the weights, prompts and sampling."""
    out: str | None = None
    """Also write the rows as JSON here."""


def main(argv=None) -> None:
    from policies.hf.loading import pick_device

    args, _ = parse_args(argv, GpuBenchOptions, "python -m experiments.bench.gpu", __doc__)
    defaults = SIZES[args.size]
    args = attrs.evolve(args, **{k: v for k, v in defaults.items() if getattr(args, k) is None})
    unknown = sorted(set(args.shapes) - set(SHAPES))
    if unknown:
        raise SystemExit(f"error: shapes: unknown {unknown[0]!r}; valid: {', '.join(SHAPES)}")
    device = pick_device(args.device)
    rows = [bench_shape(shape, device, args) for shape in args.shapes]
    print_table(rows, device, args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": str(device), "load_average": os.getloadavg()[0], "options": attrs.asdict(args),
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
