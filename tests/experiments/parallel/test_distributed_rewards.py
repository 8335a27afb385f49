"""Reward functions (env.rewards) on two processes: each process scores its own groups, the
values are gathered with the rewards (reward/<name> over every process's completions, replicas
kept equal), and a function failing on one process stops both after the same collective."""

import json
import re

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from experiments.training.checkpoint import load_latest  # noqa: E402
from tests.experiments.parallel.test_distributed_run import launch, scalars, tiny_args  # noqa: E402

pytestmark = pytest.mark.slow

MODULE = '''
import json, os

def digits(prompts, completions, answer, **kwargs):
    """None for an empty completion, else the share of its characters that are digits."""
    out = [None if not c.strip() else sum(ch.isdigit() for ch in c) / len(c) for c in completions]
    with open(os.path.join(os.environ["REWARD_LOG_DIR"], f"rank{os.environ['RANK']}.jsonl"), "a") as f:
        f.write(json.dumps(out) + "\\n")
    return out

def fails_on_rank_1(prompts, completions, **kwargs):
    if os.environ["RANK"] == "1":
        raise ValueError("rank one has no scorer")
    return [0.0] * len(completions)
'''


def test_two_processes_gather_reward_functions_and_stop_together(tmp_path, monkeypatch):
    (tmp_path / "dist_rewards.py").write_text(MODULE)
    monkeypatch.setenv("REWARD_LOG_DIR", str(tmp_path))
    out = launch(*tiny_args(tmp_path, "train.run_name=mine", "env.rewards=[verifier,dist_rewards:digits]",
                            "env.reward_weights=[1.0,0.5]"), path=(tmp_path,))
    assert out.returncode == 0, out.stderr[-4000:]
    run = tmp_path / "runs" / "mine"
    history = load_latest(run)[1]["history"]
    ranks = [[json.loads(line) for line in (tmp_path / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert len(history) == len(ranks[0]) == len(ranks[1]) == 4
    for values, mine, theirs in zip(history, *ranks):
        scored = [v for v in mine + theirs if v is not None]  # every process's completions
        assert values["reward/digits"] == pytest.approx(sum(scored) / len(scored), rel=1e-5)
        assert values["reward/unscorable_frac"] == pytest.approx(1 - len(scored) / len(mine + theirs))
    assert scalars(run)["processes/state_diff"] == [(s, 0.0) for s in (1, 2, 3, 4)]

    failed = launch(*tiny_args(tmp_path, "train.run_name=fails", "env.rewards=[verifier,dist_rewards:fails_on_rank_1]"),
                    path=(tmp_path,))
    # no traceback of ours (accelerate's launcher prints its own ChildFailedError for any failed process)
    assert failed.returncode == 1 and "experiments/training" not in failed.stderr, failed.stderr[-4000:]
    lines = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2, failed.stderr[-4000:]
    # two processes write to one stderr: their lines come in either order
    lines.sort(key=lambda line: not line.startswith("error: process 1:"))
    assert re.fullmatch(r"error: process 1: step 1: reward function fails_on_rank_1: raised ValueError: rank one has "
                        r"no scorer \(row: arith-L1-\d+ '.*', the first of \d+ completions\)", lines[0]), lines
    assert lines[1].startswith("error: step 1: a reward function failed on process 1 (its error is printed above); ")
