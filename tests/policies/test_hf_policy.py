"""The transformers policy on a tiny Qwen3: sampling, chunked log-probs, reference, LoRA, loading."""

import pytest
import torch

from tests.hf_fixtures import arithmetic_prompts, host, make_policy, tiny_dir  # noqa: F401

from policies.base import PromptBatch  # noqa: E402
from rlvr_env.problems import BOXED_INSTRUCTION  # noqa: E402
from policies.hf import logprobs as LP  # noqa: E402
from policies.hf.logprobs import response_logprobs  # noqa: E402
from policies.hf.policy import left_pad  # noqa: E402
from algorithms import ConfigError  # noqa: E402
from experiments.training.build import build_trainer, compose_config  # noqa: E402
from tests.conftest import run_cli  # noqa: E402


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def naive_logprobs(policy, rollout, temperature: float = 1.0) -> torch.Tensor:
    """[B, T] from the full [B, S + T, V] logits of one plain forward (the reference implementation),
    on the policy's device."""
    rollout = rollout.to(policy.device)
    ids = torch.cat([rollout.prompt_tokens, rollout.tokens], dim=1)
    attention = torch.cat([rollout.prompt_mask, rollout.mask], dim=1).long()
    logits = policy.causal(input_ids=ids, attention_mask=attention,
                           position_ids=(attention.cumsum(-1) - 1).clamp_min(0)).logits.float() / temperature
    s, t = rollout.prompt_tokens.shape[1], rollout.tokens.shape[1]
    logp = logits[:, s - 1: s - 1 + t].log_softmax(-1).gather(-1, rollout.tokens[..., None]).squeeze(-1)
    return logp * rollout.mask


def test_sampling_pads_stops_and_decodes(tiny_dir):  # noqa: F811
    policy = make_policy(tiny_dir, max_new_tokens=8, temperature=1.5)
    prompts = arithmetic_prompts(3)
    r = policy.sample(prompts, 4, gen(0))
    assert len(r) == 12 and r.group_size == 4 and r.tokens.shape[1] <= 8
    assert torch.equal(r.prompt_index, torch.arange(3).repeat_interleave(4))
    lengths = r.mask.sum(1).long()
    assert torch.equal(r.mask, (torch.arange(r.tokens.shape[1]) < lengths[:, None]).float())  # right-padded
    for b in range(12):
        ids = policy.encode(prompts.texts[b // 4])
        row = r.prompt_tokens[b][r.prompt_mask[b].bool()].tolist()
        assert row == ids and r.prompt_mask[b, -len(ids):].all()  # left-padded, the chat-templated prompt
        response = r.tokens[b, : lengths[b]].tolist()
        stopped = response[-1] in policy.stop_ids
        assert stopped != bool(r.truncated[b]) and (stopped or lengths[b] == 8)
        assert not any(t in policy.stop_ids for t in response[:-1])  # nothing after the first stop token
        assert r.texts[b] == policy.tokenizer.decode(response, skip_special_tokens=True)
    assert r.truncated.any() and (~r.truncated).any()  # both cases occur with this seed
    assert (r.entropy[r.mask.bool()] > 0).all() and (r.entropy[~r.mask.bool()] == 0).all()
    torch.testing.assert_close(r.old_logp, host(policy.logprobs(r)), atol=0, rtol=0)  # recompute: ratio 1 exactly


def test_sampling_is_reproducible_from_the_generator(tiny_dir):  # noqa: F811
    policy = make_policy(tiny_dir, max_new_tokens=6)
    prompts = arithmetic_prompts(2)
    g1, g2 = gen(7), gen(7)
    a, b = policy.sample(prompts, 3, g1), policy.sample(prompts, 3, g2)
    assert torch.equal(a.tokens, b.tokens) and a.texts == b.texts
    assert torch.equal(g1.get_state(), g2.get_state())
    c = policy.sample(prompts, 3, gen(8))
    assert not torch.equal(c.tokens[:, :1], a.tokens[:, :1]) or c.texts != a.texts
    split = make_policy(tiny_dir, max_new_tokens=6, generation_batch=3)  # one prompt per pass
    d = split.sample(prompts, 3, gen(7))
    assert torch.equal(d.tokens[:, : a.tokens.shape[1]], a.tokens) and d.texts == a.texts


@pytest.mark.parametrize("padded", [True, False], ids=["left_padded", "same_length"])
def test_kv_decoder_logits_equal_transformers_forward_bit_for_bit(tiny_dir, padded):  # noqa: F811
    from transformers import DynamicCache

    from policies.hf.samplers.decode import KVDecoder, supports
    from policies.hf.samplers.kv_cache import TransformersDecoder

    policy = make_policy(tiny_dir, device="cpu")
    model = policy.causal.eval()
    assert supports(model)
    texts = arithmetic_prompts(3).texts if padded else arithmetic_prompts(1).texts * 2
    tokens, mask = left_pad([policy.encode(t) for t in texts], policy.tokenizer.pad_token_id)
    assert bool((mask == 0).any()) == padded
    attention = mask.long()
    positions = (attention.cumsum(-1) - 1).clamp_min(0)
    decoders = []
    with torch.no_grad():
        for make in (lambda c: KVDecoder(model, c, attention, 4, 6), lambda c: TransformersDecoder(model, c, attention, 4)):
            cache = DynamicCache(config=model.config)
            model(input_ids=tokens, attention_mask=attention, position_ids=positions, past_key_values=cache,
                  use_cache=True, logits_to_keep=1)
            decoders.append(make(cache))
        position = positions[:, -1:].repeat_interleave(4, dim=0) + 1
        for t in range(6):
            token = torch.randint(3, 90, (len(texts) * 4,), generator=gen(t))
            fast, slow = (d(token, position) for d in decoders)
            assert torch.equal(fast, slow), (t, (fast - slow).abs().max())
            position = position + 1


def test_generation_is_the_same_with_and_without_the_kv_decoder(tiny_dir):  # noqa: F811
    from policies.hf.samplers.kv_cache import generate

    policy = make_policy(tiny_dir, device="cpu")
    tokens, mask = left_pad([policy.encode(t) for t in arithmetic_prompts(3, seed=2).texts],
                            policy.tokenizer.pad_token_id)
    noise = torch.rand(12, 3 * 5, generator=gen(0))
    a, b = (generate(policy.causal.eval(), tokens, mask, 5, noise, stop_ids=policy.stop_ids,
                     pad_id=policy.tokenizer.pad_token_id, temperature=3.0, min_new_tokens=3, fast=fast)
            for fast in (True, False))
    assert a.tokens.shape[1] > 3 and a.truncated.any() and (~a.truncated).any()  # rows stop and run out
    for field in ("tokens", "mask", "logp", "entropy", "truncated"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_kv_decoder_covers_only_models_it_reproduces(tiny_dir):  # noqa: F811
    from policies.hf.samplers.decode import supports

    assert not supports(make_policy(tiny_dir, lora={"r": 2}).causal)  # LoRA layers are not plain linears
    assert not supports(make_policy(tiny_dir, attn_implementation="eager").causal)


@pytest.mark.slow
@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (2.0, 5, 1.0), (1.3, 0, 0.6)])
def test_first_token_frequencies_match_the_model(tiny_dir, temperature, top_k, top_p):  # noqa: F811
    policy = make_policy(tiny_dir, max_new_tokens=1, temperature=temperature, top_k=top_k, top_p=top_p,
                         old_logp="sampler")
    prompts = arithmetic_prompts(1)
    n = 40_000  # one prefill, shared by every row
    r = policy.sample(prompts, n, gen(1))
    ids = torch.tensor([policy.encode(prompts.texts[0])], device=policy.device)
    with torch.no_grad():
        logits = host(policy.causal(input_ids=ids).logits[0, -1]).float() / temperature
    probs = logits.softmax(-1)
    keep = torch.ones_like(probs, dtype=torch.bool)
    if top_k:
        keep &= logits >= logits.topk(top_k).values[-1]
    if top_p < 1:
        order = probs.argsort(descending=True)
        before = probs[order].cumsum(0) - probs[order]
        keep[order[before > top_p]] = False
    expected = torch.where(keep, probs, torch.zeros(())) / probs[keep].sum()
    freq = torch.bincount(r.tokens[:, 0], minlength=probs.numel()).float() / n
    assert (freq[~keep] == 0).all()
    se = (expected * (1 - expected) / n).sqrt()
    assert ((freq - expected).abs() <= 5 * se + 1e-9).all()
    # the recorded log-prob is of logits / temperature before top-k / top-p (what training computes)
    torch.testing.assert_close(r.old_logp[:, 0], logits.log_softmax(-1)[r.tokens[:, 0]], atol=1e-5, rtol=0)


@pytest.mark.parametrize("share", [True, False], ids=["shared_prompts", "full_sequences"])
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_chunked_logprobs_equal_full_logits_with_gradients(tiny_dir, share, chunk):  # noqa: F811
    policy = make_policy(tiny_dir, max_new_tokens=10, temperature=1.5)
    r = policy.sample(arithmetic_prompts(3, seed=4), 3, gen(2))
    r = r.select(torch.randperm(len(r), generator=gen(3)))  # groups shuffled, as in minibatches
    weights = torch.randn(r.tokens.shape, generator=gen(4)).to(policy.device)
    mask = r.mask.to(policy.device)
    grads = []
    for fn in (lambda: naive_logprobs(policy, r, 1.5),
               lambda: response_logprobs(policy.causal, r.prompt_tokens, r.prompt_mask, r.tokens, r.mask,
                                         temperature=1.5, chunk=chunk, share_prompts=share)):
        policy.causal.zero_grad(set_to_none=True)
        logp = fn()
        (logp * weights * mask).sum().backward()
        grads.append((host(logp), host(torch.cat([p.grad.flatten() for p in policy.causal.parameters()]))))
    (naive, g_naive), (ours, g_ours) = grads
    torch.testing.assert_close(ours, naive, atol=2e-5, rtol=0)
    assert (ours[r.mask == 0] == 0).all()
    torch.testing.assert_close(g_ours, g_naive, atol=1e-5, rtol=1e-4)
    assert g_naive.abs().max() > 1e-2


def test_chunks_bound_the_logits_block_in_forward_and_backward(tiny_dir, monkeypatch):  # noqa: F811
    policy = make_policy(tiny_dir, max_new_tokens=10)
    r = policy.sample(arithmetic_prompts(2), 4, gen(5))
    calls = []
    original = LP.head_logprobs

    def spy(hidden, *args):
        calls.append((hidden.shape[0], torch.is_grad_enabled()))
        return original(hidden, *args)

    monkeypatch.setattr(LP, "head_logprobs", spy)
    logp = response_logprobs(policy.causal, r.prompt_tokens, r.prompt_mask, r.tokens, r.mask, temperature=1.0,
                             chunk=6)
    forward = len(calls)
    assert forward == -(-int(r.mask.sum()) // 6)  # only real response tokens, 6 at a time
    logp.sum().backward()
    assert len(calls) == 2 * forward  # every chunk's logits recomputed in backward, not kept
    assert max(n for n, _ in calls) <= 6


def test_sampler_logp_agrees_with_recomputed(tiny_dir):  # noqa: F811
    prompts = arithmetic_prompts(3)
    a = make_policy(tiny_dir, old_logp="recompute").sample(prompts, 4, gen(6))
    b = make_policy(tiny_dir, old_logp="sampler").sample(prompts, 4, gen(6))
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(b.old_logp, a.old_logp, atol=2e-5, rtol=0)


def test_reference_is_a_frozen_copy_only_with_the_kl_penalty(tiny_dir):  # noqa: F811
    free = make_policy(tiny_dir)
    assert free.reference is None
    with pytest.raises(RuntimeError, match="without a reference"):
        free.ref_logprobs(free.sample(arithmetic_prompts(1), 2, gen(0)))
    policy = make_policy(tiny_dir, reference=True)
    r = policy.sample(arithmetic_prompts(2), 3, gen(0))
    before = policy.ref_logprobs(r)
    torch.testing.assert_close(host(before), r.old_logp)
    optimizer = torch.optim.SGD(list(policy.parameters()), lr=1.0)
    (-(policy.logprobs(r) * r.mask.to(policy.device)).sum()).backward()
    optimizer.step()
    assert (policy.logprobs(r).detach() - before).abs().max() > 1e-3  # the policy moved
    assert torch.equal(policy.ref_logprobs(r), before)  # the reference did not
    assert not any(p.requires_grad for p in policy.reference.parameters())


def test_lora_adapter_reference_state_and_export(tiny_dir, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM

    policy = make_policy(tiny_dir, reference=True, lora={"r": 4, "alpha": 8})
    assert policy.reference is None  # LoRA: the reference is the adapter switched off, no copy
    trainable = dict(policy.model.named_parameters())
    names = [n for n, p in trainable.items() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    r = policy.sample(arithmetic_prompts(2), 3, gen(0))
    base = policy.ref_logprobs(r)
    optimizer = torch.optim.Adam(list(policy.parameters()), lr=1e-2)
    for _ in range(2):
        (-(policy.logprobs(r) * r.mask.to(policy.device)).sum()).backward()
        optimizer.step()
        optimizer.zero_grad()
    trained = policy.logprobs(r).detach()
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(policy.ref_logprobs(r), base)  # adapter off = the untouched base
    assert set(policy.state_dict()) == set(names)
    policy.save_model(tmp_path / "model")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")  # peft adapter, base from its config
    ids = torch.cat([r.prompt_tokens, r.tokens], 1)[:1]
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, host(policy.model(input_ids=ids.to(policy.device)).logits),
                                   atol=1e-5, rtol=0)


def test_full_model_state_round_trip_and_export(tiny_dir, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = make_policy(tiny_dir)
    state = policy.state_dict()
    other = make_policy(tiny_dir)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1)
    other.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(other.parameters(), policy.parameters()))
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict({k: v for k, v in list(state.items())[1:]})
    policy.save_model(tmp_path / "m")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert all(torch.equal(a, host(b)) for a, b in zip(loaded.parameters(), policy.model.parameters()))
    assert AutoTokenizer.from_pretrained(tmp_path / "m").eos_token == policy.tokenizer.eos_token


def test_char_tokenizer_round_trip_and_chat_template(tiny_dir):  # noqa: F811
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    question = "What is (12 + 3) * -4?"
    ids = tok(question)["input_ids"]
    assert len(ids) == len(question) and tok.decode(ids) == question  # one token per character
    prompt = f"{question}\n{BOXED_INSTRUCTION}"
    ids = tok(prompt)["input_ids"]
    assert len(ids) == len(question) + 2 and tok.decode(ids) == prompt  # the instruction is one token
    answer = tok("\\boxed{-15}")["input_ids"]
    assert len(answer) == 5 and tok.decode(answer) == "\\boxed{-15}"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id != tok.eos_token_id
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(tok(chat)["input_ids"], skip_special_tokens=True) == "user\nhi\nassistant\n"


def test_tiny_builder_is_idempotent_and_atomic(tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    from policies.hf.tiny import build_tiny_qwen3

    path = build_tiny_qwen3(tmp_path / "a", hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    stamp = (path / "config.json").stat().st_mtime_ns
    again = build_tiny_qwen3(tmp_path / "a", hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    assert again == path and (path / "config.json").stat().st_mtime_ns == stamp  # the same arguments: reused

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        build_tiny_qwen3(tmp_path / "b", hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no half-written folder, no temporary left


@pytest.mark.slow
def test_policy_without_weights_fails_at_start_saying_how_to_fix(tmp_path):
    out = run_cli("policy=qwen3-8b", "env=arithmetic", f"train.log_dir={tmp_path}")
    assert out.returncode == 2
    assert "policy.model_path: no model weights at 'Qwen/Qwen3-8B-Base'" in out.stderr
    assert "policy.model_path=/data/Qwen3-8B-Base" in out.stderr
    assert "(hf download Qwen/Qwen3-8B-Base --local-dir /data/Qwen3-8B-Base)" in out.stderr
    assert not any(tmp_path.iterdir())  # nothing written
    empty = tmp_path.parent / "empty-model"
    empty.mkdir(exist_ok=True)
    with pytest.raises(ConfigError, match="has no config.json and weights.*policy.model_path=/path/to"):
        build_trainer(compose_config("policy=hf", "env=arithmetic", f"policy.model_path={empty}"), tmp_path / "run")
    with pytest.raises(ConfigError, match="policy.model_path: missing"):
        build_trainer(compose_config("policy=hf", "env=arithmetic"), tmp_path / "run")
    assert not any(tmp_path.iterdir())


def test_a_response_without_prompt_is_refused(tiny_dir):  # noqa: F811
    policy = make_policy(tiny_dir, chat_template=False)
    r = policy.sample(PromptBatch(index=torch.arange(1), texts=("7",)), 2, gen(0))
    for width in (0, 1):  # no prompt column; a row whose prompt is all padding
        mask = torch.zeros(len(r), width)
        with pytest.raises(ValueError, match="without a prompt token"):
            response_logprobs(policy.causal, r.prompt_tokens[:, :width], mask, r.tokens, r.mask, temperature=1.0,
                              chunk=8)


def test_missing_weights_message_names_the_installed_hub_cli():
    """``hf download``: the command huggingface_hub installs (``huggingface-cli`` is gone from it)."""
    from importlib.metadata import entry_points

    from policies.hf.loading import missing_weights_message

    text = missing_weights_message("Qwen/Qwen3-8B-Base", "not in the cache", hub_id=True)
    assert "(hf download Qwen/Qwen3-8B-Base --local-dir /data/Qwen3-8B-Base)" in text and "huggingface-cli" not in text
    scripts = {e.name: e.value for e in entry_points(group="console_scripts") if e.dist.name == "huggingface_hub"}
    assert scripts.get("hf", "").startswith("huggingface_hub.cli") and "huggingface-cli" not in scripts
