"""The claims report: built from a small set of event files whose values are known, and end
to end from a tiny run of the claims' experiments."""

import json

import numpy as np
import pytest

from experiments.claims.runner import run_experiments
from experiments.training.lifecycle import RunDirectory
from experiments.claims.report import build, load_experiment, main
from experiments.sim import History

B_TAGS = ("accuracy/all", "accuracy/hard", "accuracy/medium", "accuracy/easy")


def write_runs(exp_dir, name: str, finals: dict[str, list[list[float]]], steps: int = 4) -> None:
    """Event files of runs ``label,seed=s`` whose B_TAGS rise linearly to ``finals[label][s]``
    (one value per tag), and the experiment's manifest."""
    runs = []
    for label, per_seed in finals.items():
        for seed, last in enumerate(per_seed):
            values = np.linspace(0.0, 1.0, steps)[:, None] * np.array(last)[None, :]  # (S, M)
            History(B_TAGS, values.astype(np.float32)).write_events(RunDirectory(exp_dir / f"{label},seed={seed}").logger())
            runs.append({"dir": f"{label},seed={seed}", "label": label, "seed": seed})
    manifest = {"name": name, "base": ["train.steps=4"], "extra": [], "settings": {k: [] for k in finals}, "runs": runs}
    (exp_dir / "experiment.json").write_text(json.dumps(manifest))


def test_report_from_event_files_with_known_values(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "report"
    (runs / "b").mkdir(parents=True)
    write_runs(runs / "b", "b", {"grpo_hadw,G=8": [[0.62, 0.4, 0.6, 0.9], [0.73, 0.5, 0.7, 0.9], [0.84, 0.6, 0.8, 0.9]],
                                 "grpo,G=16": [[0.6, 0.4, 0.6, 0.9], [0.7, 0.5, 0.7, 0.9], [0.8, 0.6, 0.8, 0.9]],
                                 "grpo,G=8": [[0.5, 0.4, 0.6, 0.9], [0.6, 0.5, 0.7, 0.9], [0.7, 0.6, 0.8, 0.9]]})
    loaded = load_experiment(runs / "b")
    assert [len(h) for h in loaded.histories["grpo,G=16"]] == [4, 4, 4]
    np.testing.assert_allclose(loaded.final("grpo,G=16", "accuracy/all"), [0.6, 0.7, 0.8], rtol=1e-6)
    (row,) = build(runs, out)
    # Paired differences G=8 + HA-DW - G=16: 0.02, 0.03, 0.04 -> +3.00 ± 4.303 * 0.01 / sqrt(3).
    assert (row.ours, row.holds) == ("+3.00 ± 2.48 pts (hard +0.00 ± 0.00 pts)", "yes")
    page = (out / "README.md").read_text()
    assert "| b | GRPO + HA-DW, G = 8 beats GRPO, G = 16 (final accuracy) |" in page
    assert "| +3.00 ± 2.48 pts (hard +0.00 ± 0.00 pts) | **yes** |" in page
    assert "| grpo,G=16 | 3 | 0.7000 ± 0.2484 | 0.5000 ± 0.2484 | 0.7000 ± 0.2484 | 0.9000 ± 0.0000 |" in page
    assert "Nowhere: every claim holds." in page
    for name in "acdefg":  # every other experiment: its command instead
        assert f"**Not run** (command: `python -m experiments.claims names={name} out=runs/claims`, then the report again)" in page
    assert "![Claim (b)" in page and (out / "b_rollouts.png").stat().st_size < 150_000


def test_a_claim_that_fails_is_listed_with_numbers(tmp_path):
    runs = tmp_path / "runs"
    (runs / "b").mkdir(parents=True)
    worse = [[0.5, 0.4, 0.6, 0.9], [0.6, 0.5, 0.7, 0.9], [0.7, 0.6, 0.8, 0.9]]
    write_runs(runs / "b", "b", {"grpo_hadw,G=8": worse, "grpo,G=8": worse,
                                 "grpo,G=16": [[a + 0.1 + 0.01 * i, *rest] for i, (a, *rest) in enumerate(worse)]})
    (row,) = build(runs, tmp_path / "report")
    assert row.holds == "no"
    page = (tmp_path / "report" / "README.md").read_text()
    assert ("- (b) GRPO + HA-DW, G = 8 beats GRPO, G = 16 (final accuracy): **no**. Ours -11.00 ± 2.48 pts "
            "(hard +0.00 ± 0.00 pts)") in page
    assert "Against GRPO at G = 8, G = 16 adds +11.00 ± 2.48 pts (twice the samples per step) and HA-DW adds +0.00 ± 0.00 pts" in page


def test_missing_or_empty_runs_are_clear_errors(tmp_path, capsys):
    def refused(message: str) -> None:
        with pytest.raises(SystemExit) as stop:
            main([f"runs={tmp_path if message != 'does not exist' else tmp_path / 'nowhere'}", f"out={tmp_path / 'r'}"])
        assert stop.value.code == 2 and message in capsys.readouterr().err

    refused("does not exist")
    refused("no experiment results")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "experiment.json").write_text(json.dumps({"name": "b", "runs": [{"dir": "x", "label": "grpo", "seed": 0}]}))
    refused("run directory missing")
    (tmp_path / "b" / "x").mkdir()
    refused("no scalars")


@pytest.mark.slow
def test_report_of_a_tiny_claims_run(tmp_path):
    """End to end: experiments e and a on a tiny bank, events written by the runner, read by the report."""
    extra = ("train.steps=5", "env.num_prompts=16", "train.prompts_per_step=4")
    seconds = run_experiments(["e", "a"], str(tmp_path / "runs"), workers=1, seeds=2, extra=extra)
    assert seconds > 0 and json.loads((tmp_path / "runs" / "suite.json").read_text())["e a"]["workers"] == 1
    runs = load_experiment(tmp_path / "runs" / "e")
    assert set(runs.histories) == {"grpo", "grpo_focal"} and len(runs.histories["grpo"]) == 2
    assert runs.final("grpo", "pass@k/256")[0] >= runs.final("grpo", "pass@k/1")[0]
    np.testing.assert_allclose(runs.final("grpo", "pass@k/1"), runs.final("grpo", "accuracy/all"), atol=1e-6)
    assert runs.histograms == {} and load_experiment(tmp_path / "runs" / "a").histograms["grpo_hadw"]  # trainer run
    rows = build(tmp_path / "runs", tmp_path / "report")
    assert [r.experiment for r in rows] == ["a"] * 6 + ["e"] * 5
    # labels from the runs' own configs: train.steps=5 wins over the suite's 100 and 200
    assert load_experiment(tmp_path / "runs" / "a").setting("grpo,on-policy-200", "train.steps") == 5
    assert "HA-DW improves grpo in the default run (on-policy, 5 steps)" in [r.claim for r in rows]
    assert not any("200 steps" in r.claim + r.note or "step 100" in r.note for r in rows)
    run_experiments(["e"], str(tmp_path / "runs"), workers=1, seeds=2, extra=(*extra, "train.steps=2"))  # replaces e's runs
    assert [len(h) for h in load_experiment(tmp_path / "runs" / "e").histories["grpo"]] == [2, 2]
    names = {p.name for p in (tmp_path / "report").glob("*.png")}
    assert names == {"a_accuracy.png", "a_bias.png", "a_belief.png", "a_phi.png", "e_passk.png", "e_mass.png"}


def test_language_model_section_reads_the_last_evaluation(tmp_path):
    """Experiment g: held-out accuracy is logged every few steps only (NaN between), length every step."""
    exp = tmp_path / "runs" / "g"
    runs = []
    for label, acc, length in (("grpo", (0.30, 0.40), 10.0), ("grpo_hadw", (0.35, 0.44), 12.0)):
        for seed in range(2):
            values = np.full((5, 2), np.nan)
            values[:, 1] = length + seed + np.arange(5)  # response/length_mean, mean over steps: length + seed + 2
            values[[0, 3], 0] = [0.1, acc[seed]]  # eval/accuracy at steps 1 and 4 only
            History(("eval/accuracy", "response/length_mean"), values.astype(np.float32)).write_events(
                RunDirectory(exp / f"{label},seed={seed}").logger())
            runs.append({"dir": f"{label},seed={seed}", "label": label, "seed": seed})
    exp.joinpath("experiment.json").write_text(json.dumps({"name": "g", "base": ["policy=tiny-qwen3"], "runs": runs}))
    acc, length = build(tmp_path / "runs", tmp_path / "report")
    assert acc.ours == "+4.50 ± 6.35 pts"  # differences 0.05, 0.04: sd 0.01 / sqrt(2), half 12.706 sd / sqrt(2)
    assert (length.ours, length.holds) == ("+2.00 ± 0.00 tokens (mean over steps)", "yes")
    assert (tmp_path / "report" / "g_tiny.png").is_file()
