"""env=arithmetic_scratchpad with the tiny Qwen3: a toy warm start on worked solutions writes
working before its box; a short RL run logs response length and accuracy per level."""

import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from experiments.training.metrics import EVAL_LENGTH_LEVELS, EVAL_LEVELS, LENGTH_LEVELS  # noqa: E402
from policies.hf.loading import encode_prompt  # noqa: E402
from policies.hf.tiny import WarmStartParams, build_tiny_qwen3, warm_start, warm_start_target  # noqa: E402
from rlvr_env.problems import arithmetic_problems, format_prompt, in_held_out_split  # noqa: E402
from rlvr_env.scratchpad import written_steps  # noqa: E402
from tests.conftest import run_cli  # noqa: E402


def test_warm_start_targets_are_worked_solutions():
    (p,) = arithmetic_problems(1, (3,), seed=0)  # two operations
    target = warm_start_target(p, "scratchpad")
    assert len(written_steps(target)) == 2 and target.endswith(f"\\boxed{{{p.answer}}}")
    assert warm_start_target(p, "boxed") == f"\\boxed{{{p.answer}}}"  # env=arithmetic: as before
    with pytest.raises(ValueError, match="template"):
        WarmStartParams(template="chat")


@pytest.mark.slow
def test_toy_warm_start_writes_working_before_the_box(tmp_path):
    """150 supervised steps of 16 level-1 problems (about a minute on one thread): greedy decoding
    learns the format (a step ``a<op>b=c;``, then ``\\boxed{}``) on held-out level-1 problems;
    the toy is too short to learn the sums themselves, so their values are not checked."""
    torch.set_num_threads(1)
    params = WarmStartParams(steps=150, batch_size=16, lr=1e-2, levels=(1,), template="scratchpad")
    out = warm_start(build_tiny_qwen3(tmp_path / "base"), tmp_path / "warm", params)
    record = json.loads((out / "warm_start.json").read_text())
    assert record["template"] == "scratchpad" and record["final_loss"] < 1.5  # from ln(vocabulary) ~ 4 at init
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    held = [p for p in arithmetic_problems(100, (1,), seed=7) if in_held_out_split(p.prompt)][:4]
    assert held
    for p in held:
        ids = torch.tensor([encode_prompt(tokenizer, format_prompt(p, "scratchpad"), True)])
        with torch.no_grad():
            text = tokenizer.decode(model.generate(ids, max_new_tokens=20, do_sample=False)[0, ids.shape[1]:],
                                    skip_special_tokens=True)
        assert re.search(r"=-?\d+;.*\\boxed\{-?\d+\}", text), (p.prompt, text)
        assert written_steps(text.split("\\boxed{")[0]), text


@pytest.mark.slow
def test_cli_run_logs_length_and_accuracy_per_level(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["policy=tiny-qwen3", "env=arithmetic_scratchpad", "algo=grpo_hadw", f"policy.model_path={tmp_path / 'cache'}",
            "policy.warm_start.steps=0", "policy.max_new_tokens=8", "env.num_problems=10", "env.heldout=10",
            "train.steps=3", "train.prompts_per_step=10", "train.group_size=2", "train.eval_every=1",
            "eval.max_problems=10", "eval.n=1", f"train.log_dir={tmp_path / 'runs'}", "train.progress=false"]
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = next((tmp_path / "runs").iterdir())
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    # every training problem each step, every level among them; the held-out ten: every level
    assert {*LENGTH_LEVELS, *EVAL_LEVELS, *EVAL_LENGTH_LEVELS, "response/length_mean"} <= scalars
    assert [e.step for e in events.Scalars("response/length_level1")] == [1, 2, 3]
    lengths = [e.value for e in events.Scalars("response/length_level5")]
    assert all(1 <= v <= 8 for v in lengths)  # tokens per response, within the budget
    config = next(t for t in events.Tags()["tensors"] if t.startswith("config"))
    text = events.Tensors(config)[0].tensor_proto.string_val[0].decode()
    assert "scratchpad" in text
