"""Benchmarks of the transformers backend, each against a baseline measured in the same run.

1. Step time: one GRPO step of ours (``experiments.training.trainer`` with ``policy=hf``) against TRL's
   ``GRPOTrainer`` on the same tiny Qwen3, prompts (P arithmetic problems, chat template), G,
   response length (exactly ``tokens`` new tokens on both sides: stop tokens are masked
   out until then), verifier (``verify_batch``: the worker pool our trainer uses), AdamW,
   fp32 on the CPU, gradient checkpointing off (TRL's GRPOConfig turns it on by default),
   ``threads`` torch threads on both sides. Ours runs twice: with the default
   ``old_logp=recompute`` (one extra no-grad pass for an exact on-policy ratio) and with
   ``old_logp=sampler`` (TRL's work: on-policy, TRL skips the old-log-prob pass). The three
   steps are interleaved (ours recompute, ours sampler, TRL, repeat), so that all see the
   same load on a shared machine. Median seconds per step over ``steps`` steps after
   ``warmup``; ratio ours / TRL; the load average and our step's sample / reward / update
   split are printed with the figures.
2. Memory: peak memory of the log-prob pass (forward and backward) with a Qwen3-size
   vocabulary (151,936) at B x T, chunked (ours) vs full [B, T, V] float32 logits, each in a
   fresh subprocess (peak RSS growth over the loaded model, from ``ru_maxrss``); ratio.

    python -m experiments.bench.llm                    # both parts
    python -m experiments.bench.llm part=memory batch=16 length=1024
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs
import torch

from algorithms.registry import integer, one_of
from experiments.cli import parse_args

QWEN3_VOCAB = 151_936


# ----------------------------------------------------------------- part 1: step time
def tiny_model(folder: Path) -> Path:
    from policies.hf.tiny import build_tiny_qwen3

    return build_tiny_qwen3(folder / "tiny-qwen3")


class OurSteps:
    """Our trainer (``policy=hf``) on the bench's work; ``step()`` runs and times one training step."""

    def __init__(self, model: Path, args, old_logp: str):
        from experiments.training.build import build_trainer, compose_config

        cfg = compose_config("policy=hf", "env=arithmetic", "algo=grpo", f"policy.model_path={model}",
                             f"policy.max_new_tokens={args.tokens}", f"policy.min_new_tokens={args.tokens}",
                             f"policy.old_logp={old_logp}", "policy.device=cpu", "policy.dtype=float32",
                             f"policy.num_threads={args.threads}", f"train.prompts_per_step={args.prompts}",
                             f"train.group_size={args.group}", "optim.name=adamw", "optim.lr=1e-6",
                             "optim.warmup_steps=0", "optim.weight_decay=0.0", "optim.max_grad_norm=1.0",
                             "train.progress=false", f"seed={args.seed}")
        self.trainer = build_trainer(cfg, Path(tempfile.mkdtemp(prefix="bench-ours-")))
        self.times: list[float] = []
        self.lengths: list[float] = []
        self.phases: list[dict[str, float]] = []  # the trainer's time/* split of each step

    def step(self) -> None:
        start = time.perf_counter()
        values = self.trainer.train_step()
        self.times.append(time.perf_counter() - start)
        self.lengths.append(values["response/length_mean"])
        self.phases.append({k.removeprefix("time/").removesuffix("_s"): v for k, v in values.items()
                            if k in ("time/sample_s", "time/reward_s", "time/update_s")})


def trl_trainer(model: Path, args, after_step):
    """TRL's ``GRPOTrainer`` on the same work, its step timed from ``on_step_begin`` to
    ``on_step_end``; ``after_step()`` runs after each of its steps (outside its clock)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlvr_env import arithmetic_problems, format_prompt
    from rlvr_env import verify_batch

    problems = arithmetic_problems(128, seed=args.seed)
    answers = {format_prompt(p): p.answer for p in problems}
    dataset = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": q}], "answer": a}
                                          for q, a in answers.items()])

    def reward(completions, answer, **kwargs):  # the same verifier as ours (its worker pool, not sympy in line)
        return [v.reward for v in verify_batch([c[0]["content"] for c in completions], list(answer))]

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.lengths, self.start = [], [], 0.0

        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.start)
            after_step()

    clock = Clock()

    def length_reward(completion_ids, **kwargs):  # records the work done; weight 0
        clock.lengths.append(sum(len(c) for c in completion_ids) / len(completion_ids))
        return [0.0] * len(completion_ids)

    # TRL's defaults for this setting, except: gradient checkpointing off (GRPOConfig turns it on by
    # default; ours is off), fp32 (bf16 defaults on), no logging or saving, and exactly `tokens` new tokens
    config = GRPOConfig(output_dir=tempfile.mkdtemp(prefix="bench-trl-"), num_generations=args.group,
                        per_device_train_batch_size=args.prompts * args.group, max_completion_length=args.tokens,
                        generation_kwargs={"min_new_tokens": args.tokens}, loss_type="grpo", beta=0.0,
                        learning_rate=1e-6, optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0,
                        lr_scheduler_type="constant", max_steps=args.warmup + args.steps, use_cpu=True, bf16=False,
                        gradient_checkpointing=False, report_to=[], logging_steps=10_000, save_strategy="no",
                        seed=args.seed, dataloader_num_workers=0, reward_weights=[1.0, 0.0],
                        disable_tqdm=True)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
                          reward_funcs=[reward, length_reward], args=config, train_dataset=dataset,
                          processing_class=AutoTokenizer.from_pretrained(model), callbacks=[clock])
    return trainer, clock


def step_time(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        model = tiny_model(Path(folder))
        ours = {"ours (old_logp=recompute)": OurSteps(model, args, "recompute"),
                "ours (old_logp=sampler)": OurSteps(model, args, "sampler")}

        def our_steps():  # interleaved with TRL's: the three see the same load on a shared machine
            for side in ours.values():
                side.step()

        trainer, clock = trl_trainer(model, args, our_steps)
        trainer.train()
    results = {name: (side.times, side.lengths) for name, side in ours.items()}
    results["TRL GRPOTrainer"] = (clock.times, clock.lengths)
    print(f"\nstep time: tiny Qwen3 ({json.dumps(_tiny_dims())}), P={args.prompts} prompts x G={args.group}, "
          f"{args.tokens} new tokens each, AdamW, fp32, {torch.get_num_threads()} CPU thread(s); steps interleaved "
          f"(ours recompute, ours sampler, TRL); median of {args.steps} steps after {args.warmup}; "
          f"load average {os.getloadavg()[0]:.1f}")
    base = statistics.median(clock.times[args.warmup:])
    for name, (times, lengths) in results.items():
        median = statistics.median(times[args.warmup:])
        length = statistics.mean(lengths[args.warmup:])
        print(f"  {name:<28} {median:8.3f} s/step   (mean response length {length:.1f})   ours / TRL = "
              f"{median / base:.3f}")
    for name, side in ours.items():  # sample: generation and (recompute) the old-log-prob pass
        phases = {k: statistics.median(p[k] for p in side.phases[args.warmup:]) for k in side.phases[0]}
        print(f"  {name:<28} median " + ", ".join(f"{k} {v:.3f} s" for k, v in phases.items()))


def _tiny_dims() -> dict:
    from policies.hf.tiny import TINY_CONFIG

    return {k: TINY_CONFIG[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size")}


# ----------------------------------------------------------------- part 2: memory
def rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def memory_variant(variant: str, batch: int, length: int, chunk: int) -> None:
    """Run one log-prob pass (forward + backward) in this process and print its peak RSS growth."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from policies.hf.logprobs import response_logprobs

    config = Qwen3Config(vocab_size=QWEN3_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config).train()
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, QWEN3_VOCAB, (batch, 16), generator=g)
    tokens = torch.randint(0, QWEN3_VOCAB, (batch, length), generator=g)
    ones_p, ones_t = torch.ones(batch, 16), torch.ones(batch, length)
    before = rss_bytes()
    if variant == "chunked":
        logp = response_logprobs(model, prompt, ones_p, tokens, ones_t, temperature=1.0, chunk=chunk)
    else:  # the usual way: [B, T, V] float32 logits, log_softmax, gather
        logits = model(input_ids=torch.cat([prompt, tokens], 1), logits_to_keep=length + 1).logits[:, :-1].float()
        logp = logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    logp.sum().backward()
    print(json.dumps({"variant": variant, "peak_bytes": rss_bytes() - before}))


def memory(args) -> None:
    rows = args.batch * args.length
    full_need = 3 * rows * QWEN3_VOCAB * 4  # logits, log-softmax output, their gradient
    available = _available_bytes()
    sizes = [(args.batch, args.length)]
    if full_need > 0.8 * available:  # the full variant cannot run here at this size: add the largest that can
        fit = args.length
        while fit > 1 and 3 * args.batch * fit * QWEN3_VOCAB * 4 > 0.8 * available:
            fit //= 2
        sizes.append((args.batch, fit))
    print(f"\nlog-prob pass memory (forward + backward), vocab {QWEN3_VOCAB:,}, chunk {args.chunk} rows; "
          f"{available / 2**30:.1f} GiB available")
    for batch, length in sizes:
        peak = {}
        for variant in ("chunked", "full"):
            if variant == "full" and 3 * batch * length * QWEN3_VOCAB * 4 > 0.8 * available:
                print(f"  B x T = {batch} x {length}: full logits need >= {full_need / 2**30:.1f} GiB "
                      f"(3 x [B, T, V] float32): not run on this machine")
                continue
            cmd = [sys.executable, "-m", "experiments.bench.llm", f"memory_variant={variant}", f"batch={batch}",
                   f"length={length}", f"chunk={args.chunk}"]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            peak[variant] = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]
            print(f"  B x T = {batch} x {length}: {variant:<8} peak +{peak[variant] / 2**30:6.2f} GiB")
        if len(peak) == 2:
            print(f"  B x T = {batch} x {length}: chunked / full = {peak['chunked'] / peak['full']:.3f}")


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 8 * 2**30


@attrs.frozen
class LlmBenchOptions:
    part: str = attrs.field(default="all", validator=one_of("all", "step", "memory"))
    """all | step (our step against TRL's) | memory (chunked log-probs against full logits)."""
    prompts: int = attrs.field(default=8, validator=integer(1))
    """P prompts per step."""
    group: int = attrs.field(default=8, validator=integer(2))
    """G responses per prompt."""
    tokens: int = attrs.field(default=32, validator=integer(1))
    """New tokens per response (exactly)."""
    warmup: int = attrs.field(default=2, validator=integer(0))
    """Untimed steps first."""
    steps: int = attrs.field(default=10, validator=integer(1))
    """Timed steps."""
    seed: int = 0
    """Seed of the prompts and sampling."""
    threads: int = attrs.field(default=1, validator=integer(1))
    """Torch intra-op threads, both sides (the tiny preset's policy.num_threads)."""
    batch: int = attrs.field(default=16, validator=integer(1))
    """Memory part: B."""
    length: int = attrs.field(default=1024, validator=integer(1))
    """Memory part: T response tokens."""
    chunk: int = attrs.field(default=1024, validator=integer(1))
    """Memory part: rows per LM-head chunk."""
    memory_variant: str | None = attrs.field(default=None, validator=attrs.validators.optional(one_of("chunked", "full")))
    """(internal) one memory measurement in this process."""


def main(argv=None) -> None:
    args, _ = parse_args(argv, LlmBenchOptions, "python -m experiments.bench.llm", __doc__)
    if args.memory_variant:
        return memory_variant(args.memory_variant, args.batch, args.length, args.chunk)
    if args.part in ("all", "step"):
        step_time(args)
    if args.part in ("all", "memory"):
        memory(args)


if __name__ == "__main__":
    main()
