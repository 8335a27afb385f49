"""The tiny Qwen3: a real Qwen3 architecture small enough for two CPU cores, and its character tokenizer.

    build_tiny_qwen3(path, seed=0, **overrides) -> path     (Qwen3Config fields, e.g. Qwen3-0.6B's layer shapes)

It loads like any Hugging Face checkpoint (``AutoModelForCausalLM.from_pretrained(path)``,
``AutoTokenizer.from_pretrained(path)``, ``vllm.LLM(model=path)``) and needs no network.
The tokenizer maps each printable character to one token, plus whole-string tokens for the
chat roles, the answer box and the boxed instruction (``WORD_TOKENS``); its chat template
is Qwen's (``<|im_start|>role ... <|im_end|>``).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

from policies.files import atomic_folder

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


BUILD_ARGS = "tiny_build_args.json"
"""Written with the model: the arguments it was built with (a folder is reused only for the same)."""


def build_tiny_qwen3(path: str | Path, *, seed: int = 0, init_std: float | None = None, **config) -> Path:
    """A randomly initialised tiny Qwen3 + char tokenizer at ``path``; returns ``path``.

    ``config``: Qwen3Config fields over ``TINY_CONFIG`` (``hidden_size``, ``num_hidden_layers``,
    ``tie_word_embeddings``, ...); ``init_std``: the initialiser's standard deviation (None:
    Qwen3's 0.02). The same arguments give the same weights (torch seeded by ``seed``).
    Idempotent: a complete build with the same arguments is reused; one with other arguments
    is an error (pick another path). Written atomically (temporary folder + rename).
    vLLM's CPU attention takes head_dim in {32, 64, 80, 96, 112, 128, ...} only.
    """
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    check_build_args(config, init_std)
    path = Path(path).expanduser()
    args = {"seed": seed, "init_std": init_std, **config}
    if (path / "config.json").is_file():
        marker = path / BUILD_ARGS
        if marker.is_file() and json.loads(marker.read_text()) != args:
            differ = sorted(k for k in {**json.loads(marker.read_text()), **args}
                            if json.loads(marker.read_text()).get(k) != args.get(k))
            raise FileExistsError(f"{path} holds a tiny model built with other arguments ({', '.join(differ)}); "
                                  "remove it or pick another path")
        return path
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists but is not a complete tiny-model build; remove it or pick another path")
    tokenizer = char_tokenizer()
    extra = {} if init_std is None else {"initializer_range": init_std}
    cfg = Qwen3Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                      eos_token_id=tokenizer.eos_token_id, **{**TINY_CONFIG, **config, **extra})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if path.exists():
        path.rmdir()  # an empty folder: the build renames into its place
    with atomic_folder(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / BUILD_ARGS).write_text(json.dumps(args, indent=1))
    return path


def check_build_args(config: dict, init_std: float | None) -> None:
    """Refuse what Qwen3Config would take silently: an unknown field, heads that do not divide."""
    import inspect

    from transformers import Qwen3Config

    known = set(inspect.signature(Qwen3Config.__init__).parameters) | set(TINY_CONFIG)
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"build_tiny_qwen3: unknown Qwen3Config field {unknown[0]!r} (e.g. hidden_size, "
                         "num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, tie_word_embeddings)")
    merged = {**TINY_CONFIG, **config}
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "head_dim", "max_position_embeddings"):
        if isinstance(merged[name], bool) or not isinstance(merged[name], int) or merged[name] < 1:
            raise ValueError(f"build_tiny_qwen3: {name} must be a positive int, got {merged[name]!r}")
    if merged["num_attention_heads"] % merged["num_key_value_heads"]:
        raise ValueError(f"build_tiny_qwen3: num_attention_heads ({merged['num_attention_heads']}) must be a multiple "
                         f"of num_key_value_heads ({merged['num_key_value_heads']})")
    if init_std is not None and not init_std > 0:
        raise ValueError(f"build_tiny_qwen3: init_std must be > 0, got {init_std!r}")
