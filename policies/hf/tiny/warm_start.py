"""The tiny Qwen3's supervised warm start on arithmetic, built once and cached.

    ensure_tiny_qwen3(cache, WarmStartParams(...)) -> folder     <cache>/base, <cache>/warm-<hash>

The warm start teaches the answer format ``\\boxed{N}`` (with ``template: scratchpad``, worked
solutions: ``warm_start_target``) on arithmetic problems for a few hundred steps, so RL starts
at partial accuracy spread across levels. It never trains on the held-out split
(``rlvr_env.problems.in_held_out_split``) that the trainer's evaluation uses, and it uses
the trainer's optimizer and schedule builders (``algorithms.optim``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from tqdm import tqdm

from algorithms.optim import OptimParams, build_optimizer, build_scheduler
from algorithms.registry import gt, integer
from policies.files import atomic_folder
from policies.hf.tiny.model import TINY_CONFIG, build_tiny_qwen3


@attrs.frozen
class WarmStartParams:
    steps: int = attrs.field(default=600, validator=integer(0))
    """Supervised steps on arithmetic (0: start RL from the random init)."""
    batch_size: int = attrs.field(default=64, validator=integer(1))
    """Problems per supervised step."""
    lr: float = attrs.field(default=3e-3, validator=gt(0.0))
    """AdamW peak learning rate (linear warm-up over 5% of the steps, cosine decay to 10%)."""
    levels: tuple[int, ...] = attrs.field(default=(1, 2, 3, 4, 5), converter=tuple)
    """Arithmetic levels trained on."""
    template: str = attrs.field(default="boxed", validator=attrs.validators.in_(("plain", "boxed", "scratchpad")))
    """Prompt template of the problems (as the env formats them); scratchpad: the targets are worked
    solutions (``warm_start_target``)."""
    seed: int = attrs.field(default=0, validator=integer(0))
    """Seed of the problem stream and of the model's initialisation."""
    label_smoothing: float = attrs.field(default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.lt(1.0)])
    """Share of each target token's probability spread over the vocabulary (0: plain likelihood).
    It keeps the warm start unsure where it is right, so RL has a sharpening to do."""


def warm_start(base: Path, out: Path, params: WarmStartParams, *, chat_template: bool = True,
               device: torch.device | str = "cpu") -> Path:
    """Supervised fine-tuning of the model at ``base`` on ``\\boxed{answer}`` completions (worked
    solutions with the scratchpad template) of arithmetic problems outside the held-out split, on
    ``device`` (the policy's), saved to ``out`` (kept if already there)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policies.hf.loading import encode_prompt
    from policies.hf.policy import left_pad
    from rlvr_env.problems import arithmetic_problems, format_prompt, in_held_out_split  # here: the policies
    # import without the environments (gymnasium, math-verify), as on a bare GPU machine

    if (out / "config.json").is_file():
        return out
    tokenizer = AutoTokenizer.from_pretrained(base)
    device = torch.device(device)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
    problems = [p for p in arithmetic_problems(params.steps * params.batch_size * 2 + 1, params.levels, params.seed)
                if not in_held_out_split(p.prompt)]
    optim_params = OptimParams(name="adamw", lr=params.lr, weight_decay=0.01, warmup_steps=max(1, params.steps // 20),
                               schedule="cosine", min_lr_ratio=0.1)
    optimizer = build_optimizer(optim_params, model.parameters())
    scheduler = build_scheduler(optim_params, optimizer, params.steps)
    model.train()
    for step in tqdm(range(params.steps), desc=f"tiny-qwen3 warm start -> {out}", file=sys.stderr, mininterval=5):
        batch = [problems[(step * params.batch_size + i) % len(problems)] for i in range(params.batch_size)]
        prompt_ids, prompt_mask = left_pad([encode_prompt(tokenizer, format_prompt(p, params.template), chat_template)
                                            for p in batch], tokenizer.pad_token_id)
        targets = [tokenizer(warm_start_target(p, params.template))["input_ids"] + [tokenizer.eos_token_id]
                   for p in batch]
        width = max(len(t) for t in targets)
        tokens = torch.tensor([t + [tokenizer.pad_token_id] * (width - len(t)) for t in targets])  # (b, T) right-padded
        mask = (torch.arange(width)[None, :] < torch.tensor([len(t) for t in targets])[:, None]).float()
        loss = target_loss(model, *(x.to(device) for x in (prompt_ids, prompt_mask, tokens, mask)),
                           params.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record = {**attrs.asdict(params), "final_loss": float(loss.detach())}
        (tmp / "warm_start.json").write_text(json.dumps(record, indent=1))
    return out


def warm_start_target(problem, template: str) -> str:
    """The supervised completion of a generated arithmetic problem: ``\\boxed{answer}``, or with the
    scratchpad template its worked solution (``rlvr_env.scratchpad.worked_solution``: each
    intermediate result, then the box)."""
    if template == "scratchpad":
        from rlvr_env.scratchpad import worked_solution  # here, as rlvr_env.problems above

        return worked_solution(problem.metadata["expression"])
    return f"\\boxed{{{problem.answer}}}"


def target_loss(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                label_smoothing: float) -> torch.Tensor:
    """Mean cross-entropy per target token of ``tokens`` [b, T] (right-padded, ``mask``) after
    ``prompt_ids`` [b, S] (left-padded), with ``label_smoothing``. The vocabulary is tiny, so
    the full [b, S + T, V] logits are fine here."""
    attention = torch.cat([prompt_mask, mask], dim=1).long()  # (b, S + T)
    logits = model(input_ids=torch.cat([prompt_ids, tokens], dim=1), attention_mask=attention,
                   position_ids=(attention.cumsum(-1) - 1).clamp_min(0), use_cache=False).logits
    s = prompt_ids.shape[1]
    predicting = logits[:, s - 1: -1].float()  # (b, T, V): the positions that predict each target token
    targets = tokens.masked_fill(~mask.bool(), -100)
    return F.cross_entropy(predicting.flatten(0, 1), targets.flatten(), ignore_index=-100, label_smoothing=label_smoothing)


def ensure_tiny_qwen3(cache: str | Path, params: WarmStartParams, chat_template: bool = True,
                      device: torch.device | str = "cpu") -> Path:
    """The warm-started tiny model's folder, built (once) under ``cache`` on ``device``. Another
    device computes other last bits, so a warm start off the CPU has its own folder (the CPU's
    key is the one it always was)."""
    cache = Path(cache).expanduser()
    base = build_tiny_qwen3(cache / "base", seed=params.seed)
    if params.steps == 0:
        return base
    device = torch.device(device)
    on = {} if device.type == "cpu" else {"device": device.type}
    key = json.dumps({**attrs.asdict(params), "chat_template": chat_template, "config": TINY_CONFIG, **on},
                     sort_keys=True)
    return warm_start(base, cache / f"warm-{hashlib.sha256(key.encode()).hexdigest()[:10]}", params,
                      chat_template=chat_template, device=device)


