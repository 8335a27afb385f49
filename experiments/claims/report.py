"""The claims report: ``python -m experiments.claims.report runs=runs/claims out=docs/report``.

Reads the runs of ``python -m experiments.claims`` (each experiment's ``experiment.json``
and its runs' TensorBoard events) and writes ``OUT/README.md`` with PNG figures: the claim
table (claim / paper / paper's number / our number with 95% CI / holds?), where the
simulator disagrees, and per experiment its table of final values and captioned figures
(accuracy and bias per bucket over steps, HA-DW's C_t and eta_t, the distribution of Phi,
pass@k curves, correct-mass trajectories, response length). An experiment without runs
gets its command instead ("not run").
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import attrs
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from algorithms import theory as T
from experiments.claims import ANCHORS, EXPERIMENTS, LAMBDAS, PASS_K
from experiments.claims.closed_forms import save_figure
from experiments.claims.rules import ASSESS, Estimate, Row, Runs
from experiments.cli import fail, parse_args
from experiments.sim import History
from experiments.training import metrics as M
from experiments.training.lifecycle import RunDirectory
from rlvr_env.bank import BUCKETS

# Final values shown in each experiment's table (tag, last: 1 = final step, 0 = mean over steps).
TABLE = {
    "a": [*((tag, 1) for tag in M.EXACT_ACCURACY), (M.CLIP_FRAC, 0)],
    "b": [(tag, 1) for tag in M.EXACT_ACCURACY],
    "c": [(M.EXACT_ACCURACY[0], 1), (M.EXACT_ACCURACY[1], 1)],
    "d": [(M.EXACT_ACCURACY[0], 1), (M.EXACT_ACCURACY[1], 1), (M.BELIEF, 1)],
    "e": [("pass@k/1", 1), ("pass@k/16", 1), ("pass@k/256", 1), ("modes/rare_mass", 1), ("modes/unsampled_correct", 1)],
    "f": [(M.EXACT_ACCURACY[0], 1), (M.EXACT_ACCURACY[0], 0), ("modes/unsampled_correct", 1), ("pass@k/256", 1)],
    "g": [(M.EVAL_ACCURACY, 1), ("response/length_mean", 0)],
}


# ----------------------------------------------------------------- reading runs


def load_run(run_dir: Path) -> tuple[History, list]:
    """A run's scalars as a History (steps 1..S; NaN where a tag was not logged) and its
    reweight/weights histograms [(step, bucket limits, counts)]."""
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"{run_dir}: run directory missing (listed in its experiment.json)")
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    series = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in tags["scalars"]}
    if not series:
        raise ValueError(f"{run_dir}: no scalars in its TensorBoard events")
    steps = max(max(s) for s in series.values())
    rows = [{tag: s[step] for tag, s in series.items() if step in s} for step in range(1, steps + 1)]
    history = History(tuple(series), np.array([[r.get(k, math.nan) for k in series] for r in rows], dtype=np.float32))
    histograms = []
    if "reweight/weights" in tags["histograms"]:
        for e in events.Histograms("reweight/weights"):
            value = e.histogram_value
            histograms.append((e.step, np.array(value.bucket_limit), np.array(value.bucket)))
    return history, histograms


def load_experiment(exp_dir: Path) -> Runs:
    """An experiment's runs from ``exp_dir`` (its ``experiment.json`` and run directories)."""
    manifest_path = Path(exp_dir) / "experiment.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{exp_dir}: no experiment.json (run python -m experiments.claims first)")
    manifest = json.loads(manifest_path.read_text())
    histories: dict[str, list[History]] = {}
    histograms: dict[str, list] = {}
    configs: dict[str, list[dict]] = {}
    for run in sorted(manifest["runs"], key=lambda r: r["seed"]):
        history, hist = load_run(Path(exp_dir) / run["dir"])
        if run["label"].endswith(",trainer"):
            histograms[run["label"].removesuffix(",trainer")] = hist
        else:
            histories.setdefault(run["label"], []).append(history)
            config = RunDirectory(Path(exp_dir) / run["dir"])
            if config.config_file.is_file():  # the labels say what the runs ran (train.steps=20 ...)
                configs.setdefault(run["label"], []).append(config.read_config())
    return Runs(manifest["name"], histories, histograms, manifest, configs)


# ----------------------------------------------------------------- figures


def band(ax, runs: Runs, label: str, tag: str, name: str | None = None, **kw) -> None:
    """Mean over seeds and its 95% t-band of ``tag`` over steps."""
    curves = runs.curve(label, tag)  # (seeds, S)
    steps = np.arange(1, curves.shape[1] + 1)
    est = [Estimate.of(c[np.isfinite(c)]) if np.isfinite(c).sum() else Estimate(math.nan, math.nan, 0) for c in curves.T]
    mean = np.array([e.mean for e in est])
    half = np.nan_to_num(np.array([e.half for e in est]))
    ok = np.isfinite(mean)
    (line,) = ax.plot(steps[ok], mean[ok], label=name or label, lw=1.2, **kw)
    ax.fill_between(steps[ok], (mean - half)[ok], (mean + half)[ok], color=line.get_color(), alpha=0.2, lw=0)


def panels(runs: Runs, labels: list[str], tags: list[str], titles: list[str], ylabel: str, out: Path, name: str,
           zero: bool = False) -> str:
    fig, axes = plt.subplots(1, len(tags), figsize=(3.0 * len(tags) + 0.6, 2.9), squeeze=False)
    for ax, tag, title in zip(axes[0], tags, titles):
        for i, label in enumerate(labels):
            if runs.has(label, tag):
                band(ax, runs, label, tag, color=f"C{i}")  # one colour per label in every panel
        if zero:
            ax.axhline(0, color="gray", lw=0.6)
        ax.set(title=title, xlabel="step")
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=7)
    return save_named(fig, out, name)


def save_named(fig, out: Path, name: str) -> str:
    """The figure as ``out/name`` (a report's resolution); returns ``name``."""
    save_figure(fig, out / name, dpi=80)
    return name


def figures_a(runs: Runs, out: Path) -> list[tuple[str, str]]:
    pair = ["grpo", "grpo_hadw"]
    n = len(runs.histories["grpo"])
    figs = [(panels(runs, pair, [f"accuracy/{b}" for b in BUCKETS], BUCKETS, "exact accuracy", out, "a_accuracy.png"),
             (f"Claim (a), HA-DW helps most on hard prompts: exact accuracy per bucket over steps, GRPO with and "
             f"without HA-DW (mean and 95% band over {n} seeds).")),
            (panels(runs, pair, [f"bias/{b}" for b in BUCKETS], BUCKETS, "A_hat - A", out, "a_bias.png", zero=True),
             ("The premise of HA-DW (Theorem 1): the group baseline's bias A_hat - A over mixed groups, per bucket: "
             "negative (under-estimated) for prompts with p < 1/2, positive above. Buckets are by initial p, so a "
             "bucket's bias rises as its prompts are learned."))]
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 2.9))
    band(axes[0], runs, "grpo_hadw", "hadw/belief", "belief C_t")
    band(axes[0], runs, "grpo_hadw", "accuracy/batch", "batch accuracy y_t")
    band(axes[1], runs, "grpo_hadw", "hadw/eta", "gain eta_t")
    for ax in axes:
        ax.set(xlabel="step")
        ax.legend(fontsize=7)
    figs.append((save_named(fig, out, "a_belief.png"), ("HA-DW's anchor: the belief C_t follows the batch accuracy y_t with the "
                 "gain eta_t (grpo_hadw, mean and 95% band over seeds).")))
    hist = runs.histograms.get("grpo_hadw")
    if hist:
        fig, ax = plt.subplots(figsize=(5.5, 2.9))
        for step, limits, counts in [hist[0], hist[len(hist) // 2], hist[-1]]:
            edges = np.r_[limits[0] - (limits[1] - limits[0]) if len(limits) > 1 else limits[0] - 0.01, limits[:-1]]
            ax.stairs(counts / max(counts.sum(), 1), np.r_[edges, limits[-1]], label=f"step {step}")
        ax.set(xlabel="Phi (weight of a response's advantage)", ylabel="share of responses")
        ax.legend(fontsize=7)
        figs.append((save_named(fig, out, "a_phi.png"), ("The distribution of HA-DW's weight Phi = lambda exp(D M) over the responses "
                     "of mixed groups (lambda 1.5; one single-run Trainer, seed 0): weights below 1.5 damp the "
                     "advantages the bias inflates, weights above raise the ones it shrinks.")))
    return figs


def figures_b(runs: Runs, out: Path) -> list[tuple[str, str]]:
    labels = list(runs.histories)
    return [(panels(runs, labels, ["accuracy/all", "accuracy/hard"], ["all prompts", "hard"], "exact accuracy", out, "b_rollouts.png"),
             "Claim (b), G = 8 with HA-DW against G = 16 without: exact accuracy over steps (same prompts per step).")]


def figures_c(runs: Runs, out: Path) -> list[tuple[str, str]]:
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 2.9))
    for ax, opt in zip(axes, ("adam", "sgd")):
        est = [runs.estimate(f"{opt},lambda={lam}", "accuracy/all") for lam in LAMBDAS]
        ax.errorbar(LAMBDAS, [e.mean for e in est], yerr=[e.half for e in est], fmt="o-", ms=3, label="grpo_hadw")
        base = runs.estimate(f"{opt},none", "accuracy/all")
        ax.axhspan(base.mean - base.half, base.mean + base.half, color="gray", alpha=0.3, label="grpo (no reweighting)")
        if runs.has(f"{opt},none,lr=4.5", "accuracy/all"):  # SGD: GRPO with lambda 1.5's step scale
            m = runs.estimate(f"{opt},none,lr=4.5", "accuracy/all")
            ax.axhspan(m.mean - m.half, m.mean + m.half, color="tab:red", alpha=0.2, label="grpo, lr x 1.5")
        ax.axvspan(1.3, 1.5, color="tab:green", alpha=0.1, label="paper's best")
        ax.set(title=opt, xlabel="lambda_scale")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("final exact accuracy")
    return [(save_named(fig, out, "c_lambda.png"), ("Claim (c), lambda_scale best at 1.3-1.5: final accuracy against lambda_scale "
             "under Adam and SGD (mean and 95% CI over seeds)."))]


def figures_d(runs: Runs, out: Path) -> list[tuple[str, str]]:
    labels = ["dynamic", *(f"fixed={c}" for c in ANCHORS), "window", "none"]
    est = [runs.estimate(k, "accuracy/all") for k in labels]
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 2.9))
    axes[0].bar(range(len(labels)), [e.mean for e in est], yerr=[e.half for e in est], color="tab:blue", alpha=0.7)
    axes[0].set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
    lo = min(e.mean - e.half for e in est)
    axes[0].set(ylim=(lo - 0.01, max(e.mean + e.half for e in est) + 0.005), ylabel="final exact accuracy")
    for k in ("dynamic", "window", "fixed=0.5"):
        band(axes[1], runs, k, "hadw/belief")
    band(axes[1], runs, "none", "accuracy/batch", "batch accuracy (none)")
    axes[1].set(xlabel="step", ylabel="anchor")
    axes[1].legend(fontsize=7)
    return [(save_named(fig, out, "d_anchor.png"), ("Claim (d), the dynamic anchor is best and fixed anchors beat none: final "
             "accuracy per anchor (95% CI) and the anchors over steps."))]


def figures_e(runs: Runs, out: Path) -> list[tuple[str, str]]:
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 2.9))
    for label in ("grpo", "grpo_focal"):
        est = [runs.estimate(label, f"pass@k/{k}") for k in PASS_K]
        axes[0].errorbar(PASS_K, [e.mean for e in est], yerr=[e.half for e in est], fmt="o-", ms=3, label=label)
    axes[0].set(xscale="log", xlabel="k", ylabel="exact pass@k (final)")
    axes[0].legend(fontsize=7)
    g = np.arange(1, 257)
    for tau in (0.02, 0.05, 0.1):
        axes[1].plot(g, T.rare_mode_miss_probability(g, 0.5, tau), label=f"tau = {tau}")
    axes[1].set(xscale="log", xlabel="group size G", ylabel="P(mixed, rare mode missed)", title="mu = 0.5")
    axes[1].legend(fontsize=7)
    figs = [(save_named(fig, out, "e_passk.png"), ("Claim (e), F-GRPO raises pass@k for large k and keeps pass@1: exact pass@k "
             "after training (mean and 95% CI over seeds); right, the miss probability of a rare correct mode "
             "(closed form), rising then falling in G."))]
    figs.append((panels(runs, ["grpo", "grpo_focal"], ["accuracy/all", "modes/rare_mass", "modes/unsampled_correct"],
                        ["correct mass p", "rare mode's mass", "unsampled correct mass"], "mean over prompts", out, "e_mass.png"),
                 ("Claim (e), the rare mode's mass against the total correct mass over training, and the correct "
                 "mass a group of G leaves unsampled, sum over correct j of pi_j (1 - pi_j)^G.")))
    return figs


def figures_f(runs: Runs, out: Path) -> list[tuple[str, str]]:
    labels = list(runs.histories)
    return [(panels(runs, labels, ["accuracy/all", "modes/unsampled_correct", "agrae/batch_acc"],
                    ["exact accuracy", "unsampled correct mass", "A-GRAE focus on hard: p_bar"], "", out, "f_agrae.png"),
             ("Claim (f), A-GRAE: learning speed (exact accuracy), exploration (correct mass left unsampled by a "
             "group) and its schedule: the weight p_bar of the hard-focused term (1 - p_bar on the easy one)."))]


def figures_g(runs: Runs, out: Path) -> list[tuple[str, str]]:
    labels = list(runs.histories)
    return [(panels(runs, labels, ["response/length_mean", "eval/accuracy", "eval/level1"],
                    ["response length (tokens)", "held-out accuracy", "held-out accuracy, level 1"], "", out, "g_tiny.png"),
             "Claim (g), tiny-qwen3 on arithmetic: response length, held-out accuracy (all levels and level 1, "
             "mean@4 every 50 steps) over steps.")]


FIGURES = {"a": figures_a, "b": figures_b, "c": figures_c, "d": figures_d, "e": figures_e, "f": figures_f, "g": figures_g}


# ----------------------------------------------------------------- the page


def names_value(key: str) -> str:
    """``names=`` of the claims command that ran the experiments ``key`` ("a b c": [a,b,c])."""
    names = key.split()
    return names[0] if len(names) == 1 else "[" + ",".join(names) + "]"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def claim_table(rows: list[Row]) -> list[str]:
    lines = ["| | claim | paper | paper's number | our number (95% CI) | holds? |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.experiment} | {cell(r.claim)} | {r.paper} | {cell(r.paper_number)} | {cell(r.ours)} | **{r.holds}** |" for r in rows]
    return lines


def final_table(runs: Runs, tags: list[tuple[str, int]]) -> list[str]:
    shown = [(t, last) for t, last in tags if any(runs.has(label, t) for label in runs.histories)]
    head = [f"{t} ({'final' if last else 'mean over steps'})" for t, last in shown]
    lines = ["| setting | seeds | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(shown)]
    for label, hs in runs.histories.items():
        cells = [runs.estimate(label, t, last).plain() if runs.has(label, t) else "" for t, last in shown]
        lines.append(f"| {label} | {len(hs)} | " + " | ".join(cells) + " |")
    return lines


def build(runs_dir: Path, out: Path) -> list[Row]:
    """Write ``out/README.md`` and its figures from ``runs_dir``; returns the claim rows."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs directory {runs_dir} does not exist (python -m experiments.claims names=all out={runs_dir})")
    present = [name for name in EXPERIMENTS if (runs_dir / name / "experiment.json").is_file()]
    if not present:
        raise FileNotFoundError(f"{runs_dir}: no experiment results (python -m experiments.claims names=all out={runs_dir})")
    out.mkdir(parents=True, exist_ok=True)
    suite = json.loads((runs_dir / "suite.json").read_text()) if (runs_dir / "suite.json").is_file() else {}
    rows, sections = [], []
    for name, exp in EXPERIMENTS.items():
        lines = [f"## ({name}) {exp.title}", "", f"Paper: {exp.claim}", "", f"Command: `{exp.command()}`", ""]
        if name not in present:
            sections.append(lines[:4] + [f"**Not run** (command: `{exp.command()}`, then the report again).", ""])
            continue
        runs = load_experiment(runs_dir / name)
        exp_rows = ASSESS[name](runs)
        rows += exp_rows
        extra = " ".join(runs.manifest.get("extra", []))
        lines += [f"Setting: `{' '.join(runs.manifest['base'])}`" + (f", extra overrides `{extra}` (they win over what the note says)" if extra else "") + ". "
                  + exp.note, "", *claim_table(exp_rows), "", *final_table(runs, TABLE[name]), ""]
        for file, caption in FIGURES[name](runs, out):
            lines += [f"![{caption}]({file})", "", f"*{caption}*", ""]
        sections.append(lines)
    timing = "; ".join(f"`python -m experiments.claims names={names_value(k)} out={runs_dir}`: {v['seconds']:.0f} s wall on {v['workers']} "
                       f"worker(s)" for k, v in suite.items())
    disagree = [f"- ({r.experiment}) {r.claim}: **{r.holds}**. Ours {r.ours}; paper: {r.paper_number}." + (f" {r.note}." if r.note else "")
                for r in rows if r.holds != "yes" or r.note]
    page = ["# The papers' claims on the simulator", "",
            (f"Built by `python -m experiments.claims.report runs={runs_dir} out={out}` from the runs of "
            f"`python -m experiments.claims` ({timing or 'wall time not recorded'}); "
            f"`python -m experiments.claims names=all out={runs_dir} report={out}` does both. Every number is a mean over seeds "
            "with its 95% t-interval; differences are paired by seed. *holds?* is computed from the interval: **yes** "
            "when it excludes zero in the claimed direction, **no** when it excludes zero the other way or lies within "
            "±0.1 points (no effect), **unclear** otherwise (experiments/claims/rules.py)."), "",
            *claim_table(rows), "", "## Where the simulator disagrees with the papers, and caveats", "",
            *(disagree or ["Nowhere: every claim holds."]), ""]
    for s in sections:
        page += s
    (out / "README.md").write_text("\n".join(page).rstrip() + "\n")
    return rows


@attrs.frozen
class ReportOptions:
    runs: str = "runs/claims"
    """The runs of ``python -m experiments.claims``."""
    out: str = "docs/report"
    """Output folder (README.md and figures)."""


def main(argv: list[str] | None = None) -> None:
    args, _ = parse_args(argv, ReportOptions, "python -m experiments.claims.report", __doc__)
    try:
        rows = build(Path(args.runs), Path(args.out))
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    print(f"{len(rows)} claims, {sum(r.holds == 'yes' for r in rows)} hold: {Path(args.out) / 'README.md'}")


if __name__ == "__main__":
    main()
