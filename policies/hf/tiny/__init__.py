"""``policy=tiny-qwen3``: a Qwen3 small enough for two CPU cores, with a character tokenizer.

Built once into a cache folder (``policy.model_path``, default ``~/.cache/rlvr-sim/tiny-qwen3``):

    <cache>/base                  random init: Qwen3Config + char tokenizer + chat template
    <cache>/warm-<hash>           supervised warm start on arithmetic (hash of its settings)

both written atomically (temporary folder + rename) and reused, then loaded through the
same ``from_pretrained`` code as Qwen3-8B. The warm start teaches the answer format
``\\boxed{N}`` on arithmetic problems for a few hundred steps, so RL starts at partial accuracy
spread across levels (level 1 mostly solved, levels 4-5 mostly not). It never trains on the
held-out split (``rlvr_env.problems.in_held_out_split``) that the trainer's evaluation uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import string
import sys
import tempfile
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from tqdm import tqdm

from algorithms.registry import build_params, gt, integer
from policies.hf import HFParams, check_sampler_available
from policies.registry import POLICIES
from rlvr_env.problems import in_held_out_split

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # pad, turn start, turn end (= eos)
# Whole-string tokens besides the characters: the chat roles, the answer box and (added in
# char_tokenizer) the instruction sentence every boxed prompt carries (rlvr_env.problems.BOXED_INSTRUCTION),
# so that two CPU cores spend their time on the question.
WORD_TOKENS = ("user", "assistant", "\\boxed{")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TINY_CONFIG = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=32, max_position_embeddings=1024, rope_theta=10000.0,
                   tie_word_embeddings=True, rms_norm_eps=1e-6)
def char_tokenizer():
    """A character-level ``PreTrainedTokenizerFast``: printable ASCII plus ``WORD_TOKENS``, pad / eos
    specials, a chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rlvr_env.problems import BOXED_INSTRUCTION

    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *chars, "<unk>"])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character
    core.decoder = decoders.Fuse()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    core.add_tokens([*WORD_TOKENS, BOXED_INSTRUCTION])  # matched before the character split; decoded as text
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=SPECIAL_TOKENS[0], eos_token=SPECIAL_TOKENS[2],
                                        unk_token="<unk>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@contextlib.contextmanager
def atomic_folder(path: Path):
    """Yield a temporary sibling folder; on success rename it to ``path`` (if another process
    finished first, keep theirs). On failure nothing is left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / "config.json").is_file():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_tiny_qwen3(path: str | Path, *, seed: int = 0, **config) -> Path:
    """A randomly initialised tiny Qwen3 + char tokenizer at ``path`` (kept if already there)."""
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    path = Path(path).expanduser()
    if (path / "config.json").is_file():
        return path
    tokenizer = char_tokenizer()
    cfg = Qwen3Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                      eos_token_id=tokenizer.eos_token_id, **{**TINY_CONFIG, **config})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with atomic_folder(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return path


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
    template: str = "boxed"
    """Prompt template of the problems (as the env formats them)."""
    seed: int = attrs.field(default=0, validator=integer(0))
    """Seed of the problem stream and of the model's initialisation."""
    label_smoothing: float = attrs.field(default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.lt(1.0)])
    """Share of each target token's probability spread over the vocabulary (0: plain likelihood).
    It keeps the warm start unsure where it is right, so RL has a sharpening to do."""


def warm_start(base: Path, out: Path, params: WarmStartParams, *, chat_template: bool = True) -> Path:
    """Supervised fine-tuning of the model at ``base`` on ``\\boxed{answer}`` completions of
    arithmetic problems outside the held-out split, saved to ``out`` (kept if already there)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from experiments.optim import OptimParams, build_scheduler
    from policies.hf.loading import encode_prompt
    from policies.hf.policy import left_pad
    from rlvr_env.problems import arithmetic_problems, format_prompt

    if (out / "config.json").is_file():
        return out
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    problems = [p for p in arithmetic_problems(params.steps * params.batch_size * 2 + 1, params.levels, params.seed)
                if not in_held_out_split(p.prompt)]
    optim_params = OptimParams(name="adamw", lr=params.lr, weight_decay=0.01, warmup_steps=max(1, params.steps // 20),
                               schedule="cosine", min_lr_ratio=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=0.01)
    scheduler = build_scheduler(optim_params, optimizer, params.steps)
    model.train()
    for step in tqdm(range(params.steps), desc=f"tiny-qwen3 warm start -> {out}", file=sys.stderr, mininterval=5):
        batch = [problems[(step * params.batch_size + i) % len(problems)] for i in range(params.batch_size)]
        prompt_ids, prompt_mask = left_pad([encode_prompt(tokenizer, format_prompt(p, params.template), chat_template)
                                            for p in batch], tokenizer.pad_token_id)
        targets = [tokenizer(f"\\boxed{{{p.answer}}}")["input_ids"] + [tokenizer.eos_token_id] for p in batch]
        width = max(len(t) for t in targets)
        tokens = torch.tensor([t + [tokenizer.pad_token_id] * (width - len(t)) for t in targets])  # (b, T) right-padded
        mask = (torch.arange(width)[None, :] < torch.tensor([len(t) for t in targets])[:, None]).float()
        loss = target_loss(model, prompt_ids, prompt_mask, tokens, mask, params.label_smoothing)
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


def ensure_tiny_qwen3(cache: str | Path, params: WarmStartParams, chat_template: bool = True) -> Path:
    """The warm-started tiny model's folder, built (once) under ``cache``."""
    cache = Path(cache).expanduser()
    base = build_tiny_qwen3(cache / "base", seed=params.seed)
    if params.steps == 0:
        return base
    key = json.dumps({**attrs.asdict(params), "chat_template": chat_template, "config": TINY_CONFIG}, sort_keys=True)
    return warm_start(base, cache / f"warm-{hashlib.sha256(key.encode()).hexdigest()[:10]}", params,
                      chat_template=chat_template)


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
        from policies.hf.loading import main_process_first
        from policies.hf.policy import load_policy

        check_sampler_available(self.params)  # before the warm start, which may train for minutes
        if self.params.num_threads is not None:  # before the warm start, too
            torch.set_num_threads(self.params.num_threads)
        with main_process_first():  # several processes: one builds the cache, the others load it
            folder = ensure_tiny_qwen3(self.params.model_path, self.params.warm_start, self.params.chat_template)
        return load_policy(attrs.evolve(self.params, model_path=str(folder)), reference)


POLICIES.register("tiny-qwen3", TinyQwen3Params)(TinyQwen3Builder)
