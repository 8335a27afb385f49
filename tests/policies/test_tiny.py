"""The tiny Qwen3 builder: loadable, deterministic, idempotent, atomic; the character tokenizer."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from policies.hf.tiny import TINY_CONFIG, build_tiny_qwen3, char_tokenizer  # noqa: E402
from policies.hf.tiny.model import BUILD_ARGS, SPECIAL_TOKENS  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny") / "m")


def test_loads_as_a_qwen3_with_the_preset_shape(tiny):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny)
    c = model.config
    assert type(model).__name__ == "Qwen3ForCausalLM" and model.dtype == torch.float32
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim) == \
        tuple(TINY_CONFIG[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                       "head_dim"))
    assert c.vocab_size == len(char_tokenizer()) and c.tie_word_embeddings
    q = model.model.layers[0].self_attn.q_proj.weight
    assert abs(q.std().item() - 0.02) < 0.003  # Qwen3's initialiser, N(0, 0.02)
    logits = model(torch.tensor([[3, 4, 5]])).logits
    assert logits.shape == (1, 3, c.vocab_size) and torch.isfinite(logits).all()


def test_tokenizer_is_one_token_per_character_but_its_words(tiny):
    tok = transformers.AutoTokenizer.from_pretrained(tiny)
    text = "What is 3+4*(2-1)?\nPut it in 7."
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert len(tok.encode("\\boxed{7}")) == 3  # "\boxed{" is one token, then "7" and "}"
    assert tok.pad_token == SPECIAL_TOKENS[0] and tok.eos_token == SPECIAL_TOKENS[2]
    assert tok.decode([*tok.encode("ab"), tok.eos_token_id], skip_special_tokens=True) == "ab"
    chat = tok.apply_chat_template([{"role": "user", "content": "1+1?"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"


def test_same_arguments_same_weights_and_reuse(tmp_path, tiny):
    other = build_tiny_qwen3(tmp_path / "again")
    a, b = (transformers.AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (tiny, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    before = (other / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_qwen3(other) == other  # complete build with the same arguments: reused, not rewritten
    assert (other / "model.safetensors").stat().st_mtime_ns == before
    seeded = build_tiny_qwen3(tmp_path / "seed1", seed=1)
    c = transformers.AutoModelForCausalLM.from_pretrained(seeded).state_dict()
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind


def test_overrides_untied_head_and_init_std(tmp_path):
    path = build_tiny_qwen3(tmp_path / "t", hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                            num_key_value_heads=1, tie_word_embeddings=False, init_std=0.1)
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    assert model.config.num_hidden_layers == 1 and model.config.hidden_size == 64
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert abs(model.model.layers[0].self_attn.q_proj.weight.std().item() - 0.1) < 0.01
    assert json.loads((path / BUILD_ARGS).read_text())["tie_word_embeddings"] is False


def test_refuses_a_different_or_incomplete_folder(tmp_path, tiny):
    with pytest.raises(FileExistsError, match="other arguments.*hidden_size"):
        build_tiny_qwen3(tiny, hidden_size=64)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a complete"):
        build_tiny_qwen3(tmp_path / "junk")


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_layers=2), "unknown Qwen3Config field 'num_layers'"), (dict(num_attention_heads=3), "multiple"),
    (dict(hidden_size=0), "hidden_size"), (dict(init_std=0.0), "init_std"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_tiny_qwen3(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()
