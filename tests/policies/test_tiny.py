"""The tiny Qwen3 builder: loadable, deterministic, idempotent, atomic; the character tokenizer."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from policies.tiny import PRINTABLE_CHARS, build_tiny_qwen3, char_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny") / "m")


def test_loads_as_a_qwen3_with_the_asked_shape(tiny):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny)
    c = model.config
    assert type(model).__name__ == "Qwen3ForCausalLM" and model.dtype == torch.float32
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (64, 2, 4, 2, 32)
    assert c.vocab_size == len(PRINTABLE_CHARS) + 3 and not c.tie_word_embeddings
    q = model.model.layers[0].self_attn.q_proj.weight
    assert q.shape == (4 * 32, 64) and abs(q.std().item() - 0.02) < 0.003  # drawn from N(0, init_std)
    logits = model(torch.tensor([[3, 4, 5]])).logits
    assert logits.shape == (1, 3, c.vocab_size) and torch.isfinite(logits).all()


def test_tokenizer_is_one_token_per_character(tiny):
    tok = transformers.AutoTokenizer.from_pretrained(tiny)
    text = "What is 3+4*(2-1)?\nPut it in \\boxed{7}."
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert ids[:2] == [3 + PRINTABLE_CHARS.index("W"), 3 + PRINTABLE_CHARS.index("h")]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.encode("é") == [2]
    assert tok.decode([*tok.encode("ab"), tok.eos_token_id], skip_special_tokens=True) == "ab"
    chat = tok.apply_chat_template([{"role": "user", "content": "1+1?"}], tokenize=False, add_generation_prompt=True)
    assert chat == "User: 1+1?\nAssistant: "


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
    assert not list(tmp_path.glob(".*tmp-*"))  # no temporary folder left behind


def test_tied_head_and_other_sizes(tmp_path):
    path = build_tiny_qwen3(tmp_path / "t", vocab_chars="0123456789+=", hidden_size=32, num_layers=1,
                            num_heads=2, num_kv_heads=1, tie_word_embeddings=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    assert model.config.vocab_size == 15 and model.config.num_hidden_layers == 1
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert json.loads((path / "tiny_build_args.json").read_text())["tie_word_embeddings"] is True


def test_refuses_a_different_or_incomplete_folder(tmp_path, tiny):
    with pytest.raises(FileExistsError, match="other arguments.*hidden_size"):
        build_tiny_qwen3(tiny, hidden_size=128)
    (tmp_path / "junk").mkdir()
    with pytest.raises(FileExistsError, match="not a complete"):
        build_tiny_qwen3(tmp_path / "junk")


@pytest.mark.parametrize("kwargs, match", [
    (dict(vocab_chars="aab"), "distinct"), (dict(vocab_chars=""), "non-empty"), (dict(num_heads=3), "multiple"),
    (dict(hidden_size=0), "hidden_size"), (dict(init_std=0.0), "init_std"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_tiny_qwen3(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_char_tokenizer_alone():
    tok = char_tokenizer("ab")
    assert len(tok) == 5 and tok.encode("ba") == [4, 3]
