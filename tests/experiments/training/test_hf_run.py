"""Training a language model through the same trainer: resume, export, logging, held-out
evaluation, the learning-rate schedule."""

import math

import pytest
import torch

from tests.hf_fixtures import tiny_dir  # noqa: F401

from experiments.training.checkpoint import list_checkpoints, load_latest  # noqa: E402
from experiments.training.build import build_trainer, compose_config  # noqa: E402
from experiments.evaluation.evaluator import EvalParams, evaluate  # noqa: E402
from algorithms.optim import OptimParams, build_scheduler, lr_factor  # noqa: E402
from policies.base import Rollout  # noqa: E402
from rlvr_env import ArithmeticParams, ArithmeticTask, MathTask  # noqa: E402
from rlvr_env.problems import Problem, arithmetic_problems, in_held_out_split  # noqa: E402
from tests.conftest import run_cli  # noqa: E402



def same(a: list[dict], b: list[dict]) -> bool:
    """Histories equal value for value (NaN equals NaN: an empty bucket in both)."""
    return len(a) == len(b) and all(x.keys() == y.keys() and all(
        x[k] == y[k] or (math.isnan(x[k]) and math.isnan(y[k])) for k in x) for x, y in zip(a, b))


def tiny_run(cache, *extra: str) -> dict:
    """A few-step tiny-qwen3 arithmetic run (two supervised warm-start steps, cached under ``cache``)."""
    return compose_config(
        "policy=tiny-qwen3", "env=arithmetic", "algo=grpo_hadw", f"policy.model_path={cache}",
        "policy.warm_start.steps=2", "policy.warm_start.batch_size=4", "policy.max_new_tokens=6",
        "train.steps=4", "train.prompts_per_step=3", "train.group_size=4", "train.checkpoint_every=2",
        "train.progress=false", "train.eval_every=2", "eval.max_problems=5", "eval.n=2", "optim.lr=1e-3",
        "optim.warmup_steps=2", "optim.schedule=cosine", *extra)


@pytest.mark.slow
def test_llm_run_resumes_exactly_and_exports_a_loadable_model(tmp_path):
    from transformers import AutoModelForCausalLM

    cache = tmp_path / "cache"
    full = build_trainer(tiny_run(cache), tmp_path / "full")
    history = full.train()
    assert len(history) == 4 and all(math.isfinite(h["loss/grad_norm"]) for h in history)
    assert {"eval/accuracy", "eval/level1", "eval/level5"} <= set(history[0]) and "eval/accuracy" not in history[1]
    assert "eval/accuracy" in history[2] and "eval/accuracy" in history[3]  # every 2 steps and before the last

    part = build_trainer(tiny_run(cache), tmp_path / "part")
    part.train()
    assert [p.name for p in list_checkpoints(tmp_path / "part")] == ["step_000002.pt", "step_000004.pt"]
    list_checkpoints(tmp_path / "part")[-1].unlink()  # the run died after step 2
    resumed = build_trainer(tiny_run(cache), tmp_path / "part")
    resumed.load_state_dict(load_latest(tmp_path / "part")[1])
    assert resumed.step == 2
    resumed.train()
    assert same(resumed.history, full.history)  # sampling, rewards, HA-DW, Adam, schedule: all continued exactly
    for a, b in zip(resumed.policy.parameters(), full.policy.parameters()):
        assert torch.equal(a, b)
    assert resumed.engine.scheduler.get_last_lr() == full.engine.scheduler.get_last_lr()

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "full" / "model")
    for a, b in zip(loaded.parameters(), full.policy.model.parameters()):
        assert torch.equal(a, b)
    warm = [p for p in cache.iterdir() if p.name.startswith("warm-")]
    assert len(warm) == 1 and (warm[0] / "warm_start.json").is_file()  # built once, reused by all three runs


@pytest.mark.slow
def test_cli_logs_text_metrics_samples_and_weights(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_run(tmp_path / "cache")
    args = [f"{k}={v}" for k, v in (("policy", "tiny-qwen3"), ("env", "arithmetic"), ("algo", "grpo_hadw"))]
    args += [f"policy.model_path={tmp_path / 'cache'}", "policy.warm_start.steps=0", "policy.max_new_tokens=6",
             "train.steps=2", "train.prompts_per_step=3", "train.group_size=4", "train.samples_every=1",
             "train.eval_every=1", "eval.max_problems=5", "eval.n=1", f"train.log_dir={tmp_path / 'runs'}",
             "train.progress=false"]
    assert cfg  # the same preset composes in-process
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "held-out accuracy (mean@n), all" in out.stdout and "  level 5" in out.stdout
    run_dir = next((tmp_path / "runs").iterdir())
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "histograms": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"response/length_mean", "response/length_max", "response/truncated_frac", "response/entropy",
            "speed/tokens_per_s", "time/sample_s", "time/update_s", "eval/accuracy", "eval/level3"} <= scalars
    texts = {t: events.Tensors(t) for t in events.Tags()["tensors"]}
    assert any(t.startswith("config") for t in texts) and any(t.startswith("samples") for t in texts)
    sample = next(v for t, v in texts.items() if t.startswith("samples"))[0].tensor_proto.string_val[0].decode()
    assert sample.startswith("| prompt | completion | extracted | reward |") and "What is" in sample
    assert (run_dir / "model" / "config.json").is_file()


def test_reweighting_weights_histogram_and_samples_for_any_policy(make_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from experiments.training.tracking import TensorBoardLogger

    cfg = make_cfg("algo=grpo_hadw", "train.steps=3", "train.samples_every=2", "train.progress=false")
    trainer = build_trainer(cfg, tmp_path)
    trainer.logger = TensorBoardLogger(tmp_path)
    trainer.train()
    trainer.logger.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0, "histograms": 0})
    events.Reload()
    (hist,) = events.Histograms("reweight/weights")
    assert hist.step == 2 and hist.histogram_value.num > 0
    assert hist.histogram_value.min > 0  # HA-DW scales advantages, never flips them
    assert [e.step for e in events.Tensors("samples/text_summary")] == [2]


class ScriptedPolicy:
    """Answers level-k problems correctly in the first ``right[k]`` of every n samples."""

    def __init__(self, problems: list[Problem], right: dict[int, int]):
        self.by_text = {p.prompt: p for p in problems}
        self.right = right

    def sample(self, prompts, n, generator):
        texts = []
        for text in prompts.texts:
            p = self.by_text[text.split("\n")[0]]
            texts += [f"\\boxed{{{p.answer}}}" if i < self.right[p.difficulty] else "\\boxed{x}" for i in range(n)]
        b = len(texts)
        zeros = torch.zeros(b, 1)
        return Rollout(prompt_index=prompts.index.repeat_interleave(n), prompt_tokens=zeros.long(), prompt_mask=zeros,
                       tokens=zeros.long(), mask=zeros + 1, old_logp=zeros, texts=tuple(texts), group_size=n)


def test_evaluation_is_mean_at_n_per_level():
    problems = arithmetic_problems(10, (1, 2, 3, 4, 5), seed=3)
    policy = ScriptedPolicy(problems, {1: 4, 2: 3, 3: 2, 4: 1, 5: 0})
    result = evaluate(policy, MathTask(problems, [], seed=0), EvalParams(n=4, batch_prompts=3, bootstrap=0)).metrics
    got = {g: result[g]["mean@4"]["value"] for g in ("all", "level 1", "level 2", "level 3", "level 4", "level 5")}
    assert got == pytest.approx({"all": 0.5, "level 1": 1.0, "level 2": 0.75, "level 3": 0.5, "level 4": 0.25,
                                 "level 5": 0.0})


def test_held_out_problems_are_disjoint_from_training_and_warm_start():
    task = ArithmeticTask(ArithmeticParams(num_problems=128, heldout=200), seed=0)
    held = task.heldout
    assert len({p.prompt for p in held}) == 200 and {p.difficulty for p in held} == {1, 2, 3, 4, 5}
    assert not {p.prompt for p in held} & {p.prompt for p in task.problems}
    assert all(in_held_out_split(p.prompt) for p in held)  # the warm start never trains on these
    share = sum(in_held_out_split(p.prompt) for p in arithmetic_problems(4000, seed=1)) / 4000
    assert 0.2 < share < 0.3


def test_learning_rate_schedule_by_hand():
    p = OptimParams(lr=1.0, warmup_steps=4, schedule="linear", min_lr_ratio=0.1)
    assert [lr_factor(k, p, 14) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, p, 14) == 1.0 and lr_factor(13, p, 14) == pytest.approx(0.1)
    assert lr_factor(8, p, 14) == pytest.approx(1.0 - 0.9 * 4 / 9)
    cos = OptimParams(lr=1.0, warmup_steps=0, schedule="cosine")
    assert lr_factor(0, cos, 11) == 1.0 and lr_factor(5, cos, 11) == pytest.approx(0.5) and lr_factor(10, cos, 11) == 0
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    assert build_scheduler(OptimParams(lr=0.5), optimizer, 10) is None  # constant, no warm-up: lr untouched
    scheduler = build_scheduler(OptimParams(lr=0.5, warmup_steps=2), optimizer, 10)
    seen = []
    for _ in range(3):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == [0.25, 0.5, 0.5]


def test_tabular_runs_keep_no_scheduler(make_cfg, tmp_path):
    trainer = build_trainer(make_cfg("train.progress=false"), tmp_path)
    assert trainer.engine.scheduler is None and trainer.evaluator is None


def test_warm_start_loss_is_the_likelihood_and_label_smoothing_by_hand(tiny_dir):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policies.hf.loading import encode_prompt
    from policies.hf.logprobs import response_logprobs
    from policies.hf.policy import left_pad
    from policies.hf.tiny import target_loss
    from rlvr_env.problems import format_prompt

    tokenizer, model = AutoTokenizer.from_pretrained(tiny_dir), AutoModelForCausalLM.from_pretrained(tiny_dir)
    problems = arithmetic_problems(5, seed=2)
    prompt_ids, prompt_mask = left_pad([encode_prompt(tokenizer, format_prompt(p, "boxed"), True) for p in problems],
                                       tokenizer.pad_token_id)
    targets = [tokenizer(f"\\boxed{{{p.answer}}}")["input_ids"] + [tokenizer.eos_token_id] for p in problems]
    width = max(len(t) for t in targets)
    tokens = torch.tensor([t + [0] * (width - len(t)) for t in targets])
    mask = (torch.arange(width)[None] < torch.tensor([len(t) for t in targets])[:, None]).float()
    assert mask.sum(1).unique().numel() > 1  # uneven lengths: padding is left out
    logp = response_logprobs(model, prompt_ids, prompt_mask, tokens, mask, temperature=1.0, chunk=7)
    nll = -(logp * mask).sum() / mask.sum()
    assert float(target_loss(model, prompt_ids, prompt_mask, tokens, mask, 0.0)) == pytest.approx(float(nll), abs=1e-5)
    # smoothing eps: (1 - eps) * NLL + eps * mean over the vocabulary of -log p, per target token
    attention = torch.cat([prompt_mask, mask], 1).long()
    logits = model(input_ids=torch.cat([prompt_ids, tokens], 1), attention_mask=attention,
                   position_ids=(attention.cumsum(-1) - 1).clamp_min(0)).logits[:, prompt_ids.shape[1] - 1:-1]
    uniform = -(logits.log_softmax(-1).mean(-1) * mask).sum() / mask.sum()
    want = 0.75 * nll + 0.25 * uniform
    assert float(target_loss(model, prompt_ids, prompt_mask, tokens, mask, 0.25)) == pytest.approx(float(want), abs=1e-5)
