"""Benchmark: generation with vLLM against transformers, and the weight push in a real training step.

    bash .ci/vllm --version   # once: makes .venv-vllm
    .venv-vllm/bin/python -m experiments.bench.vllm [prompts=8] [n=8] [tokens=64] [hidden=64] [layers=2]

Part 1, the engine. Same tiny Qwen3 (float32, CPU), same P arithmetic prompts, n samples each,
exactly ``tokens`` new tokens per sample (eos ignored), sampling at temperature 1 with the
sampled tokens' log-probs returned by both:
  hf    ``model.generate`` (KV cache, left-padded batch of P * n rows, ``output_logits``)
  vllm  ``VllmEngine.generate`` (in-process vLLM, paged KV cache)
Each is timed ``repeat`` times after a warm-up; medians are printed, with the ratio, and the
largest gap between the engine's log-probs of its samples and transformers' (teacher forcing). Then
``push_weights`` of the whole model (median of ``repeat``), and its share of a proxy RL step:
vLLM generation + one forward/backward/SGD step of the transformers model on the generated
batch + the push.

Part 2, the policy and the trainer (``step_prompts`` x ``step_group`` responses of exactly
``step_tokens`` tokens, ``policy=tiny-qwen3`` at random init, ``env=arithmetic``,
``algo=grpo_hadw``): the generation of ``HFPolicy.sample`` with ``policy.sampler=hf`` (our
KV-cache loop) and ``policy.sampler=vllm``, then whole ``Trainer.train_step`` calls of both
(sampling, the recomputed ``old_logp``, rewards, update, and for vLLM the push in
``sync_sampler``), with the push's share of the vLLM step. The transformers side is timed
first, before the engine exists in the process, as in a ``policy.sampler=hf`` run.
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import attrs

from algorithms.registry import integer
from experiments.cli import parse_args


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median seconds of ``repeat`` calls of ``fn`` after one warm-up call, and the last result."""
    out = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


@attrs.frozen
class VllmBenchOptions:
    prompts: int = attrs.field(default=8, validator=integer(1))
    """Part 1: prompts."""
    n: int = attrs.field(default=8, validator=integer(1))
    """Part 1: samples per prompt."""
    tokens: int = attrs.field(default=64, validator=integer(1))
    """Part 1: new tokens per sample."""
    hidden: int = attrs.field(default=64, validator=integer(1))
    """Part 1: hidden size of the tiny model."""
    layers: int = attrs.field(default=2, validator=integer(1))
    """Part 1: decoder layers of the tiny model."""
    repeat: int = attrs.field(default=3, validator=integer(1))
    """Timings per side, the best kept."""
    model_dir: str | None = None
    """Where to build the model (default: a temporary folder)."""
    step_prompts: int = attrs.field(default=16, validator=integer(1))
    """Part 2: prompts per step."""
    step_group: int = attrs.field(default=8, validator=integer(2))
    """Part 2: responses per prompt."""
    step_tokens: int = attrs.field(default=16, validator=integer(1))
    """Part 2: tokens per response."""
    steps: int = attrs.field(default=3, validator=integer(1))
    """Part 2: timed training steps per sampler."""
    skip_engine: bool = False
    """Part 2 only."""


def main(argv=None) -> dict:
    args, _ = parse_args(argv, VllmBenchOptions, "python -m experiments.bench.vllm", __doc__)
    warnings.filterwarnings("ignore", category=FutureWarning)  # vLLM's own deprecation noise

    root = Path(args.model_dir or tempfile.mkdtemp(prefix="bench_vllm_"))
    results = {} if args.skip_engine else engine_part(args, root)
    return {**results, **trainer_part(args, root)}


def engine_part(args, root: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policies.hf.tiny import build_tiny_qwen3
    from policies.hf.samplers.vllm.engine import VllmEngine
    from rlvr_env import arithmetic_problems, format_prompt

    path = build_tiny_qwen3(root / f"tiny-h{args.hidden}-l{args.layers}", hidden_size=args.hidden,
                            intermediate_size=2 * args.hidden, num_hidden_layers=args.layers)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    texts = [format_prompt(p, "boxed") for p in arithmetic_problems(args.prompts, seed=0)]
    prompt_ids = [tokenizer.encode(t) for t in texts]
    n, length = args.n, args.tokens
    generated = args.prompts * n * length

    batch = tokenizer(texts, return_tensors="pt", padding=True)

    def hf_generate():
        with torch.no_grad():
            out = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 num_return_sequences=n, max_new_tokens=length, min_new_tokens=length,
                                 output_logits=True, return_dict_in_generate=True, pad_token_id=0)
        new = out.sequences[:, batch["input_ids"].shape[1]:]  # (P * n, T)
        logits = torch.stack(out.logits, 1)  # (P * n, T, V)
        return new, torch.log_softmax(logits, -1).gather(-1, new[..., None])[..., 0]  # (P * n, T)

    t_hf, (hf_tokens, _) = timed(hf_generate, args.repeat)
    assert hf_tokens.shape == (args.prompts * n, length)

    start = time.perf_counter()
    engine = VllmEngine(path, dtype="float32", seed=0)
    t_start = time.perf_counter() - start
    t_vllm, groups = timed(lambda: engine.generate(prompt_ids, n=n, max_tokens=length, ignore_eos=True), args.repeat)
    assert all(len(c.tokens) == length for g in groups for c in g)

    t_push, _ = timed(lambda: engine.push_weights(model.named_parameters()), args.repeat)

    # Sampler/trainer mismatch on the vLLM samples: transformers' teacher-forced log-probs.
    rows = [p + list(c.tokens) for p, g in zip(prompt_ids, groups) for c in g]
    width = max(len(r) for r in rows)
    seqs = torch.tensor([[0] * (width - len(r)) + r for r in rows])  # (P * n, S + T), left-padded
    attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        logits = model(seqs, attention_mask=attention).logits[:, -length - 1:-1]  # (B, T, V)
    hf_logp = torch.log_softmax(logits, -1).gather(-1, seqs[:, -length:, None])[..., 0]  # (B, T)
    gap = (hf_logp - torch.tensor([c.logprobs for g in groups for c in g])).abs()

    # Proxy training step on the generated batch: forward, backward, SGD (what a trainer adds).
    train = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).train()
    opt = torch.optim.SGD(train.parameters(), lr=1e-3)

    def train_step():
        logits = train(seqs, attention_mask=attention).logits[:, -length - 1:-1]  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), seqs[:, -length:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_train, _ = timed(train_step, args.repeat)
    engine.close()

    step = t_vllm + t_train + t_push
    params = sum(p.numel() for p in model.parameters())
    print(f"part 1, the engine. tiny Qwen3: hidden {args.hidden}, {args.layers} layers, {params:,} parameters; "
          f"{args.prompts} prompts x {n} samples x {length} tokens = {generated:,} tokens; "
          f"torch threads {torch.get_num_threads()}")
    print(f"  hf   generate   {t_hf:8.3f} s   {generated / t_hf:10.0f} tokens/s")
    print(f"  vllm generate   {t_vllm:8.3f} s   {generated / t_vllm:10.0f} tokens/s   (engine start {t_start:.1f} s)")
    print(f"  ratio vllm/hf tokens/s: {t_hf / t_vllm:.2f}x")
    print(f"  |vllm - transformers| log-prob of the sampled tokens: max {gap.max():.2e}, mean {gap.mean():.2e}")
    print(f"  push_weights    {t_push * 1e3:8.1f} ms   ({params * 4 / t_push / 1e6:.0f} MB/s)")
    print(f"  proxy step: generate {t_vllm:.3f} s + train {t_train:.3f} s + push {t_push:.3f} s; "
          f"push share {t_push / step:.1%}")
    return dict(hf_tokens_per_s=generated / t_hf, vllm_tokens_per_s=generated / t_vllm, ratio=t_hf / t_vllm,
                push_s=t_push, push_share=t_push / step, engine_start_s=t_start, max_logp_gap=gap.max().item())


def trainer_part(args, root: Path) -> dict:
    """Policy sampling and real training steps, ``policy.sampler=hf`` then ``vllm``."""
    import torch

    from experiments.training.build import build_trainer, compose_config

    p, g, length = args.step_prompts, args.step_group, args.step_tokens
    common = ["policy=tiny-qwen3", "env=arithmetic", "algo=grpo_hadw", f"policy.model_path={root / 'tiny-qwen3'}",
              "policy.warm_start.steps=0", f"policy.max_new_tokens={length}", f"policy.min_new_tokens={length}",
              f"train.prompts_per_step={p}", f"train.group_size={g}", "train.eval_every=0", "train.progress=false",
              "train.samples_every=0"]
    tokens = p * g * length
    gen, step, phases = {}, {}, {}
    push: list[float] = []
    for sampler in ("hf", "vllm"):
        start = time.perf_counter()
        trainer = build_trainer(compose_config(*common, f"policy.sampler={sampler}"), root / f"run-{sampler}")
        built = time.perf_counter() - start
        policy, prompts = trainer.policy, trainer.task.sample_prompts(p)
        generate = functools.partial(sample_tokens, policy, prompts, g, length)
        gen[sampler], out = timed(generate, args.repeat)
        assert out[1].sum().item() == tokens, "every response should have exactly step_tokens tokens"
        trainer.train_step()  # warm-up
        times, values = [], []
        for _ in range(args.steps):
            start = time.perf_counter()
            values.append(trainer.train_step())
            times.append(time.perf_counter() - start)
            if sampler == "vllm":
                push.append(policy.sampler.push_seconds)
        step[sampler] = statistics.median(times)
        phases[sampler] = "  ".join(f"{k[5:-2]} {statistics.median(v[k] for v in values):.3f} s"
                                    for k in ("time/sample_s", "time/reward_s", "time/update_s"))
        if sampler == "vllm":
            mismatch = trainer.history[-1]["sampler/logp_abs_diff"]
            start_s = built
            policy.sampler.close()
    push_s = statistics.median(push)
    print(f"part 2, policy + trainer. tiny-qwen3 (hidden 128, 4 layers), {p} prompts x {g} responses x {length} "
          f"tokens = {tokens:,} tokens per step; torch threads {torch.get_num_threads()}")
    print(f"  generation  hf {gen['hf']:.3f} s ({tokens / gen['hf']:.0f} tokens/s)   vllm {gen['vllm']:.3f} s "
          f"({tokens / gen['vllm']:.0f} tokens/s)   ratio vllm/hf tokens/s: {gen['hf'] / gen['vllm']:.2f}x")
    print(f"  train_step  hf {step['hf']:.3f} s   vllm {step['vllm']:.3f} s   ratio hf/vllm step time: "
          f"{step['hf'] / step['vllm']:.2f}x   (vllm trainer built in {start_s:.1f} s, engine included)")
    for sampler in ("hf", "vllm"):
        print(f"    {sampler:<4} step phases: {phases[sampler]}   (update includes sync_sampler)")
    print(f"  push in sync_sampler {push_s * 1e3:.1f} ms = {push_s / step['vllm']:.1%} of the vllm step")
    print(f"  sampler/logp_abs_diff {mismatch:.2e} (min_new_tokens masks the stop token for the engine, not in the "
          f"trainer's log-probs: a mismatch by design here)")
    return {"step_hf_tokens_per_s": tokens / gen["hf"], "step_vllm_tokens_per_s": tokens / gen["vllm"],
            "step_gen_ratio": gen["hf"] / gen["vllm"], "step_hf_s": step["hf"], "step_vllm_s": step["vllm"],
            "step_push_s": push_s, "step_push_share": push_s / step["vllm"], "step_mismatch": mismatch}


def sample_tokens(policy, prompts, group_size: int, length: int) -> tuple:
    """The generation inside ``policy.sample`` alone (its sampler; no recomputed ``old_logp``):
    tokens and mask [B, T] first."""
    import torch

    from policies.hf.policy import left_pad

    ids = [policy.encode(t) for t in prompts.texts]
    generator = torch.Generator().manual_seed(0)
    out = policy.sampler.sample(policy, ids, *left_pad(ids, policy.tokenizer.pad_token_id), group_size, generator)
    return out.tokens, out.mask


if __name__ == "__main__":
    main()
