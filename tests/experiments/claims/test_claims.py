"""The claims' experiments: definitions build their configs, the verdict rules on synthetic
numbers, the exact probes of batched runs, the CLI's errors."""

import math

import numpy as np
import pytest
import torch

from experiments.claims import EXPERIMENTS, PASS_K
from experiments.claims.rules import Estimate, Runs, assess_a, assess_c, verdict
from experiments.claims.runner import main, parse_names, probe
from experiments.sim import BatchedSimulator, History
from tests.conftest import run_cli


def check_c(specs):
    c = {s.label: s.config for s in specs}
    assert (c["sgd,lambda=1.3"]["optim"]["name"], c["sgd,lambda=1.3"]["optim"]["lr"]) == ("sgd", 3)
    assert (c["adam,lambda=0.5"]["optim"]["name"], c["adam,lambda=0.5"]["reweight"]["lambda_scale"]) == ("adam", 0.5)
    assert c["adam,none"]["reweight"]["name"] == "none" and c["adam,lambda=2.0"]["train"]["minibatches"] == 4


def check_d(specs):
    d = {s.label: s.config for s in specs}
    assert (d["fixed=0.6"]["reweight"]["name"], d["fixed=0.6"]["reweight"]["anchor"]) == ("hadw_fixed", 0.6)
    assert d["window"]["reweight"]["name"] == "hadw_window" and d["dynamic"]["reweight"]["name"] == "hadw"


def check_e(specs):
    assert specs[-1].config["env"]["difficulty"] == "beta" and specs[-1].config["reweight"]["name"] == "focal"
    assert [s.config["seed"] for s in specs] == [0, 1, 0, 1]


CHECKS = {
    "a": lambda specs: (specs[-1].label == "grpo_hadw,trainer" and specs[-1].config["train"]["samples_every"] == 5
                        and specs[8].config["algo"]["filter"]["name"] == "dynamic_sampling"),
    "b": lambda specs: {s.label: s.config["train"]["group_size"] for s in specs} == {"grpo_hadw,G=8": 8, "grpo,G=16": 16, "grpo,G=8": 8},
    "c": check_c, "d": check_d, "e": check_e,
    "f": lambda specs: [s.config["reweight"].get("alpha") for s in specs[::2]] == [None, 0.5, 1.0, 2.0],
    "g": lambda specs: ((specs[0].config["policy"]["name"], specs[0].config["env"]["name"]) == ("tiny-qwen3", "arithmetic")
                        and not EXPERIMENTS["g"].tabular and EXPERIMENTS["g"].seeds >= 5),
}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_each_experiment_builds_its_configs(name):
    exp = EXPERIMENTS[name]
    specs = exp.specs(seeds=2)
    assert len(specs) == 2 * len(exp.settings) + len(exp.trainer_runs)
    assert len({s.name for s in specs}) == len(specs) and all(s.name.startswith(f"{name}/") for s in specs)
    assert CHECKS[name](specs) is not False


def test_names_and_cli_errors(capsys):
    assert parse_names(["all"]) == list("abcdef")
    assert parse_names(["g", "a", "a"]) == ["g", "a"]
    with pytest.raises(ValueError, match="unknown experiment 'z'; valid: a, b, c, d, e, f, g, all"):
        parse_names(["z"])
    for argv, message in ((["names=nope", "out=unused"], "error: names: unknown experiment 'nope'"),
                          (["out=unused"], "error: names: missing"),
                          (["names=a", "workers=0", "out=unused"], "error: workers: must be >= 1, got 0"),
                          (["names=b", "out=unused", "nope=1"], "error: Could not override 'nope'"),
                          (["b", "out=unused"], "error: expected KEY=VALUE, got 'b'")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err, argv


def test_verdicts_from_intervals():
    assert verdict(Estimate(0.02, 0.01, 5)) == "yes"
    assert verdict(Estimate(-0.02, 0.01, 5)) == "no"
    assert verdict(Estimate(0.005, 0.01, 5)) == "unclear"
    assert verdict(Estimate(0.0002, 0.0003, 5)) == "no"  # the whole interval within 0.1 points: no effect
    assert verdict(Estimate(0.0002, 0.0001, 5), negligible=0.0) == "yes"
    assert verdict(Estimate(-0.02, 0.01, 5), sign=-1) == "yes"
    assert verdict(Estimate(0.02, math.nan, 1)) == "unclear"
    est = Estimate.of([0.02, 0.03, 0.04])
    assert (est.mean, est.half, est.positive) == (pytest.approx(0.03), pytest.approx(4.303 * 0.01 / math.sqrt(3)), 3)
    assert est.pts() == "+3.00 ± 2.48 pts"


def histories(finals: dict[str, list[float]], steps: int = 3) -> list[History]:
    """One History per seed whose tags end at the given final values (constant before)."""
    keys = tuple(finals)
    seeds = len(next(iter(finals.values())))
    return [History(keys, np.array([[finals[k][s] for k in keys]] * steps, dtype=np.float64)) for s in range(seeds)]


def test_assess_a_on_synthetic_runs():
    base = {"accuracy/all": [0.5, 0.6, 0.7], "accuracy/hard": [0.2, 0.3, 0.4], "accuracy/medium": [0.5] * 3,
            "accuracy/easy": [0.9] * 3}
    gain = {"accuracy/all": [0.03, 0.04, 0.05], "accuracy/hard": [0.05, 0.06, 0.07], "accuracy/medium": [0.01] * 3,
            "accuracy/easy": [-0.01] * 3}
    runs = {}
    for b in ("grpo", "gspo", "dapo", "cispo"):
        runs[b] = histories(base)
        runs[f"{b}_hadw"] = histories({k: [x + d for x, d in zip(v, gain[k])] for k, v in base.items()})
    runs["cispo_hadw"] = histories({**base, "accuracy/all": [0.49, 0.58, 0.7]})  # worse on 2 of 3 seeds
    rows = assess_a(Runs("a", runs))
    assert [r.holds for r in rows[:3]] == ["yes"] * 3
    assert rows[0].ours == "+4.00 ± 2.48 pts (3/3 seeds)"
    assert rows[3].holds == "unclear" and rows[3].ours.endswith("(0/3 seeds)")
    # Hard-bucket gain: three bases +5, +6, +7 points, cispo 0 -> per seed 3.75, 4.5, 5.25, above medium and easy.
    assert rows[4].ours == "hard +4.50 ± 1.86 pts, medium +0.75 ± 0.00 pts, easy -0.75 ± 0.00 pts"
    assert rows[4].holds == "yes" and "MATH500" in rows[4].note and len(rows) == 5  # no default-run labels


def test_assess_c_says_when_the_scale_does_nothing():
    flat = {f"adam,lambda={lam}": histories({"accuracy/all": [0.6, 0.7, 0.8]}) for lam in (0.5, 0.8, 1.0, 1.3, 1.5, 1.7, 2.0)}
    sgd = {f"sgd,lambda={lam}": histories({"accuracy/all": [0.5 + lam / 10 + d for d in (0.0, 0.01, 0.02)]})
           for lam in (0.5, 0.8, 1.0, 1.3, 1.5, 1.7, 2.0)}
    baselines = {"sgd,none": histories({"accuracy/all": [0.6, 0.65, 0.7]}),  # differences 0.05, 0.01, -0.03
                 "sgd,none,lr=4.5": histories({"accuracy/all": [0.64, 0.65, 0.66]})}  # lambda 1.5: 0.65, 0.66, 0.67
    adam, sgd_row, matched = assess_c(Runs("c", {**flat, **sgd, **baselines}))
    assert matched.ours == "+1.00 ± 0.00 pts (against GRPO at lr 3: +1.00 ± 9.94 pts)" and matched.holds == "yes"
    assert adam.holds == "no" and adam.note == "The grid's means lie within 0.000 pts of each other: Adam divides out a constant scale of the advantages"
    assert adam.ours.startswith("flat; lambda 1.3 - lambda 0.5: +0.00 ± 0.00 pts")
    assert sgd_row.holds == "no" and sgd_row.ours == "best 2.0; lambda 1.5 - lambda 2.0: -5.00 ± 0.00 pts"


def test_probe_gives_exact_pass_at_k_and_unsampled_mass(make_cfg):
    torch.set_num_threads(1)
    cfg = make_cfg("algo=grpo", "train.steps=2", "env.num_prompts=16", "train.prompts_per_step=4", "env.num_answers=4")
    sim = BatchedSimulator([{**cfg, "seed": s} for s in (0, 1)])
    values = []
    histories = sim.run(on_step=lambda step: values.append(probe(sim)))
    for r, history in enumerate(histories):
        assert values[-1]["pass@k/1"][r] == pytest.approx(history.column("accuracy/all")[-1], abs=1e-6)
    probs, correct = sim.probs_table[1, 3], sim.correct[1, 3]  # run 1, prompt 3
    p = float((probs * correct).sum())
    unsampled = sum(float(probs[j]) * (1 - float(probs[j])) ** 8 for j in range(4) if correct[j])
    rare = sim.bank.rare_answer[1, 3]
    assert set(values[-1]) == {"modes/unsampled_correct", "modes/rare_mass", *(f"pass@k/{k}" for k in PASS_K)}
    # Each probe is a mean over the 16 prompts; check prompt 3's share against a loop.
    per_prompt = (sim.probs_table * sim.correct * (1 - sim.probs_table) ** 8).sum(-1)  # (R, N)
    assert float(per_prompt[1, 3]) == pytest.approx(unsampled)
    assert float(values[-1]["modes/unsampled_correct"][1]) == pytest.approx(float(per_prompt[1].mean()))
    assert float(values[-1]["pass@k/256"][1]) >= float(values[-1]["pass@k/1"][1]) and 0 < p < 1
    assert float(sim.probs_table[1, 3, rare]) <= p


@pytest.mark.slow
def test_cli_runs_and_writes_the_report(tmp_path):
    done = run_cli("names=b", "seeds=2", "workers=1", f"out={tmp_path / 'runs'}", f"report={tmp_path / 'report'}",
                   "train.steps=3", "env.num_prompts=16", "train.prompts_per_step=4", module="experiments.claims")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(b) GRPO + HA-DW, G = 8 beats GRPO, G = 16 (final accuracy): " in done.stdout
    assert "b: " in done.stdout and "1 worker(s)" in done.stdout
    page = (tmp_path / "report" / "README.md").read_text()
    assert "| grpo,G=16 | 2 |" in page and "extra overrides `train.steps=3 env.num_prompts=16" in page
    assert sorted(p.name for p in (tmp_path / "runs" / "b").iterdir())[:2] == ["experiment.json", "grpo,G=16,seed=0"]


def test_assess_a_labels_come_from_the_runs_configs():
    """After ``-- train.steps=20`` the rows say 20 steps (the runs' config.yaml), not the suite's 100 / 200."""
    base = {"accuracy/all": [0.5, 0.6, 0.7], "accuracy/hard": [0.2, 0.3, 0.4], "accuracy/medium": [0.5] * 3,
            "accuracy/easy": [0.9] * 3}
    worse = {**base, "accuracy/all": [0.49, 0.58, 0.69]}
    runs, configs = {}, {}
    for b in ("grpo", "gspo", "dapo", "cispo"):
        runs[b], runs[f"{b}_hadw"] = histories(base), histories(worse)
        configs[b] = configs[f"{b}_hadw"] = [{"train": {"steps": 20, "minibatches": 4}}] * 3
    for n in ("grpo", "grpo_hadw"):
        runs[f"{n},on-policy-200"] = histories(base if n == "grpo" else worse)
        configs[f"{n},on-policy-200"] = [{"train": {"steps": 20, "minibatches": 1}}] * 3
    rows = assess_a(Runs("a", runs, configs=configs))
    assert rows[0].note.startswith("At step 20 with 4 minibatches per step; in the default run (on-policy, 20 steps) "
                                   "HA-DW gives grpo ")
    assert rows[-1].claim == "HA-DW improves grpo in the default run (on-policy, 20 steps)"
    # without configs (runs from before configs were read): the steps the runs logged
    assert Runs("a", runs).setting("grpo,on-policy-200", "train.steps") == 3
