"""VllmEngine against transformers on the tiny Qwen3: log-probs, sampling knobs, live weight push.

One engine per tiny model (module scope; untied and tied output head), float32 on the CPU.
"""

import copy

import pytest
import torch

TOL = 1e-3  # float32: vLLM's CPU kernels and transformers agree to ~1e-6 on this model
PROMPT = "What is 12+7?\n"
COMPLETION = "12+7=19. The answer is \\boxed{19}."


def teacher_forced(model, prompt: list[int], completion: list[int], temperature: float = 1.0) -> torch.Tensor:
    """[T] log pi(completion[t] | prompt, completion[:t]) under a transformers model."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1] / temperature  # (T, V)
    return torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def setup(request, tmp_path_factory):
    """(engine, hf model, prompt ids, completion ids) for a tiny Qwen3 with an untied / tied lm_head."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policies.hf.tiny import build_tiny_qwen3
    from policies.hf.samplers.vllm.engine import VllmEngine

    # init_std 0.1 gives peaked next-token distributions, so weight changes show in the log-probs.
    path = build_tiny_qwen3(tmp_path_factory.mktemp("tiny") / "model", tie_word_embeddings=request.param,
                            init_std=0.1, seed=3)
    tokenizer = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    engine = VllmEngine(path, dtype="float32", max_model_len=256, seed=0)
    yield engine, hf, tokenizer.encode(PROMPT), tokenizer.encode(COMPLETION)
    engine.close()


def test_score_matches_transformers(setup):
    engine, hf, prompt, completion = setup
    [scored] = engine.score([prompt], [completion])
    expected = teacher_forced(hf, prompt, completion)
    assert scored.shape == (len(completion),)
    assert (scored - expected).abs().max().item() < TOL
    assert expected.std().item() > 0.05  # a non-degenerate completion: the check above has teeth


def test_sampled_logprobs_are_the_model_at_temperature_one(setup):
    engine, hf, prompt, _ = setup
    temperature, top_k = 0.6, 10
    groups = engine.generate([prompt, prompt[:5]], n=3, max_tokens=16, temperature=temperature, top_k=top_k, seed=7)
    for p, group in zip([prompt, prompt[:5]], groups):
        for c in group:
            ids = list(c.tokens)
            reported = torch.tensor(c.logprobs)
            assert (reported - teacher_forced(hf, p, ids)).abs().max().item() < TOL
            assert (reported - teacher_forced(hf, p, ids, temperature)).abs().max().item() > 0.05
            with torch.no_grad():
                logits = hf(torch.tensor([p + ids])).logits[0, len(p) - 1:-1]  # (T, V)
            top = logits.topk(top_k, -1).indices
            assert all(t in top[i].tolist() for i, t in enumerate(ids)), "a token outside the top-k was sampled"


def test_generate_shapes_seeds_and_padding(setup):
    from policies.hf.samplers.vllm.engine import pad_completions

    engine, _, prompt, _ = setup
    prompts = [prompt, prompt[:3], prompt[2:9]]
    groups = engine.generate(prompts, n=4, max_tokens=12, seed=11)
    again = engine.generate(prompts, n=4, max_tokens=12, seed=11)
    other = engine.generate(prompts, n=4, max_tokens=12, seed=12)
    flat = lambda gs: [c.tokens for g in gs for c in g]  # noqa: E731
    assert [len(g) for g in groups] == [4, 4, 4]
    assert flat(groups) == flat(again) and flat(groups) != flat(other)
    assert len(set(flat(groups)[:4])) > 1  # the n samples of one prompt are not copies
    for c in (c for g in groups for c in g):
        assert 1 <= len(c.tokens) == len(c.logprobs) <= 12
        assert c.finish_reason in ("stop", "length") and (c.finish_reason == "length") == (len(c.tokens) == 12)
    tokens, logp, mask = pad_completions(groups, pad_id=0)
    lengths = torch.tensor([len(c.tokens) for g in groups for c in g])
    assert tokens.shape == logp.shape == mask.shape == (12, int(lengths.max()))
    assert torch.equal(mask.sum(1), lengths.float())
    assert torch.equal(tokens[5, :lengths[5]], torch.tensor(groups[1][1].tokens))  # row b = p * n + g
    assert (logp[mask == 0] == 0).all() and (tokens[mask == 0] == 0).all() and (logp[mask == 1] < 0).all()


def test_push_weights_after_training(setup):
    """The acceptance test: train, push, and the engine's log-probs follow the trainer's."""
    engine, hf, prompt, completion = setup
    trained = copy.deepcopy(hf).train()
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.5)
    ids = torch.tensor([prompt + completion])
    for _ in range(3):  # raise the likelihood of the fixed completion
        logits = trained(ids).logits[0, len(prompt) - 1:-1]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(completion))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained.eval()
    new, old = teacher_forced(trained, prompt, completion), teacher_forced(hf, prompt, completion)

    [before] = engine.score([prompt], [completion])
    assert (before - old).abs().max().item() < TOL
    assert (before - new).abs().max().item() > 0.1  # measurably stale before the push
    engine.sleep()  # what a trainer does around its step (no-op on the CPU), then wake, push, sample
    with pytest.raises(RuntimeError, match="wake_up"):
        engine.push_weights(trained.named_parameters())
    engine.wake_up()
    engine.push_weights(trained.named_parameters())
    [after] = engine.score([prompt], [completion])
    assert (after - new).abs().max().item() < TOL
    [[c]] = engine.generate([prompt], n=1, max_tokens=10, seed=5)
    assert (torch.tensor(c.logprobs) - teacher_forced(trained, prompt, list(c.tokens))).abs().max().item() < TOL

    engine.push_weights(hf.named_parameters())  # back to the fixture's weights, for the other tests
    [restored] = engine.score([prompt], [completion])
    assert (restored - old).abs().max().item() < TOL


def test_push_weights_rejects_a_partial_state(setup):
    engine, hf, prompt, completion = setup
    with pytest.raises(ValueError, match="checkpoint tensors missing"):
        engine.push_weights(list(hf.named_parameters())[:4])
    with pytest.raises(ValueError, match="missing"):  # a DDP/PEFT prefix matches nothing
        engine.push_weights((f"module.{n}", p) for n, p in hf.named_parameters())
    [scored] = engine.score([prompt], [completion])
    assert (scored - teacher_forced(hf, prompt, completion)).abs().max().item() < TOL  # nothing was loaded


def test_bad_arguments_are_named(setup, tmp_path):
    from policies.hf.samplers.vllm.engine import VllmEngine

    engine, _, prompt, completion = setup
    with pytest.raises(ValueError, match="non-empty"):
        engine.generate([[]])
    with pytest.raises(ValueError, match="max_tokens"):
        engine.generate([prompt], max_tokens=0)
    with pytest.raises(ValueError, match="completions"):
        engine.score([prompt, prompt], [completion])
    with pytest.raises(FileNotFoundError, match="config.json"):
        VllmEngine(tmp_path)
    with pytest.raises(ValueError, match="logprobs_mode"):
        VllmEngine(tmp_path, logprobs_mode="raw_logits")
