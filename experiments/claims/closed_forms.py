"""Figures, tables and a report on the bias of group-relative advantages.

    python -m experiments.claims.closed_forms                 # writes theory/ (PNG, CSV, report.md)
    python -m experiments.claims.closed_forms out=DIR mc_groups=200000 seed=0

Everything comes from ``algorithms.theory``: closed forms (sums over R) and Monte-Carlo
simulations of reward groups. Runs in well under a minute on a CPU.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import attrs  # noqa: E402

from algorithms import theory as T  # noqa: E402
from algorithms import theory_estimators as TE  # noqa: E402
from algorithms.registry import integer  # noqa: E402
from experiments.cli import parse_args  # noqa: E402

GROUP_SIZES = (2, 4, 8, 16)
P_GRID = np.linspace(0.0, 1.0, 201)
MC_POINTS = np.linspace(0.05, 0.95, 10)


def write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """A matplotlib figure to ``path`` (PNG), then closed."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def figure_bias(out: Path, mc_groups: int, seed: int) -> str:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = []
    for g in GROUP_SIZES:
        exact = T.advantage_bias(P_GRID, g)
        (line,) = ax.plot(P_GRID, exact, label=f"G = {g} (closed form)")
        for p in MC_POINTS:
            mc = T.mc_expected_group_mean(float(p), g, mc_groups, seed)
            rows.append([g, f"{p:.3f}", f"{T.advantage_bias(float(p), g):.6f}", f"{mc.estimate - p:.6f}", f"{mc.stderr:.6f}"])
            ax.errorbar(p, mc.estimate - p, yerr=2 * mc.stderr, fmt="o", ms=3, color=line.get_color())
    ax.axhline(0, color="gray", lw=0.8)
    ax.axvline(0.5, color="gray", lw=0.8, ls=":")
    ax.set(xlabel="success rate p", ylabel="E[p_hat | S] - p  (= A - E[A_hat | S])",
           title="Theorem 1: bias of the group baseline on non-degenerate groups")
    ax.plot([], [], "o", color="k", ms=3, label="Monte Carlo (±2 SE)")
    ax.legend(fontsize=8)
    save_figure(fig, out / "bias_vs_p.png")
    write_csv(out / "bias_vs_p.csv", ["G", "p", "closed_form", "monte_carlo", "mc_stderr"], rows)
    return ("bias_vs_p.png", "E[p_hat | S] - p against p for G = 2, 4, 8, 16: positive (advantage "
            "under-estimated) for hard prompts, negative for easy ones, largest for small groups; dots are simulations.")


def table_corollary1(out: Path) -> tuple[str, str]:
    ranges = [(0.0, 0.5), (0.0, 0.25), (0.5, 1.0), (0.75, 1.0)]
    header = ["G"] + [f"P(G; {a}, {b})".replace(",", ";") for a, b in ranges]
    rows = [[g] + [f"{T.underestimation_probability(g, a, b):.4f}" for a, b in ranges] for g in range(2, 17)]
    write_csv(out / "corollary1.csv", header, rows)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    gs = np.arange(2, 17)
    for j, (a, b) in enumerate(ranges):
        ax.plot(gs, [float(r[j + 1]) for r in rows], marker="o", label=f"p ~ U({a}, {b})")
    ax.axhline(0.5, color="gray", lw=0.8)
    ax.set(xlabel="group size G", ylabel="P(p_hat > p | S)  (= P(A_hat < A | S))",
           title="Corollary 1: probability that the advantage is under-estimated")
    ax.legend(fontsize=8)
    save_figure(fig, out / "corollary1.png")
    return "\n".join(md), ("corollary1.png", "P(p_hat > p | S) averaged over p ~ U(a, b), exact: above 1/2 for hard "
                                             "ranges, below for easy ones, tending to 1/2 as G grows.")


def figure_tail(out: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    eps = np.linspace(0.0, 0.3, 121)
    for p in (0.1, 0.2, 0.3):
        axes[0].plot(eps, [T.tail_probability(p, 8, e) for e in eps], label=f"p = {p}")
    for p in (0.7, 0.8, 0.9):
        axes[1].plot(eps, [T.tail_probability(p, 8, e, side="over") for e in eps], label=f"p = {p}")
    axes[0].set(xlabel="eps", ylabel="P(A - A_hat > eps | S)", title="Theorem 2, hard prompts (G = 8)")
    axes[1].set(xlabel="eps", ylabel="P(A_hat - A > eps | S)", title="Theorem 2 mirror, easy prompts (G = 8)")
    for ax in axes:
        ax.legend(fontsize=8)
    save_figure(fig, out / "tail_probability.png")
    return ("tail_probability.png", "Theorem 2: the probability that the advantage error exceeds eps, for hard "
                                    "(under-estimation) and easy (over-estimation) prompts; steps at multiples of 1/G.")


def figure_nonbinary(out: Path, mc_groups: int, seed: int) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ps = np.linspace(0.1, 0.9, 9)
    rows = []
    for sigma in (0.0, 0.3, 0.5):
        beta = [T.mc_nonbinary_bias(T.sample_beta_rewards(p, 2.0), p, 8, sigma, mc_groups // 2, seed) for p in ps]
        axes[0].errorbar(ps, [b.estimate for b in beta], yerr=[2 * b.stderr for b in beta], marker="o", ms=3, capsize=2,
                         label=f"sigma = {sigma}")
        means = [T.truncated_gaussian_mean(mu, 0.3) for mu in ps]
        gauss = [T.mc_nonbinary_bias(T.sample_truncated_gaussian_rewards(mu, 0.3), m, 8, sigma, mc_groups // 2, seed)
                 for mu, m in zip(ps, means)]
        axes[1].errorbar(means, [b.estimate for b in gauss], yerr=[2 * b.stderr for b in gauss], marker="o", ms=3,
                         capsize=2, label=f"sigma = {sigma}")
        rows += [["beta(k=2)", sigma, f"{p:.3f}", f"{b.estimate:.6f}", f"{b.stderr:.6f}"] for p, b in zip(ps, beta)]
        rows += [["trunc_gauss(xi=0.3)", sigma, f"{m:.3f}", f"{b.estimate:.6f}", f"{b.stderr:.6f}"] for m, b in zip(means, gauss)]
    axes[0].set(xlabel="mean reward p", ylabel="E[p_hat | S_sigma] - p", title="Beta(p k, (1-p) k) rewards, k = 2, G = 8")
    axes[1].set(xlabel="mean reward p", ylabel="E[p_hat | S_sigma] - p", title="N(mu, 0.3^2) truncated to [0, 1], G = 8")
    for ax in axes:
        ax.axhline(0, color="gray", lw=0.8)
        ax.legend(fontsize=8)
    save_figure(fig, out / "nonbinary_bias.png")
    write_csv(out / "nonbinary_bias.csv", ["rewards", "sigma", "mean_reward", "bias", "stderr"], rows)
    return ("nonbinary_bias.png", "Bounded continuous rewards, conditioned on S_sigma = {max r - min r > sigma} "
                                  "(Theorem 4): no bias at sigma = 0 (almost every group updates), the same sign "
                                  "pattern as the binary case once near-uniform groups are excluded.")


def save_reward_panels(fig, axes, out: Path, name: str, ylabel: str, title: str, header: list[str], rows) -> None:
    """The two panels (r = 1, r = 0) of a bias-vs-p figure: labels, legend, PNG and CSV."""
    for ax, what in zip(axes, ("correct responses (r = 1)", "wrong responses (r = 0)")):
        ax.axhline(0, color="gray", lw=0.8)
        ax.set(xlabel="success rate p", ylabel=ylabel, title=f"{what}, {title}")
    axes[0].legend(fontsize=7)
    save_figure(fig, out / f"{name}.png")
    write_csv(out / f"{name}.csv", header, rows)


def figure_fixes(out: Path, g: int = 8, anchor: float = 0.5) -> str:
    fixes = {"GRPO (no reweighting)": None}
    fixes.update({f"HA-DW lambda={lam}": T.HADWFix(anchor=anchor, lambda_scale=lam) for lam in (1.0, 1.3, 1.5, 2.0)})
    fixes["F-GRPO gamma=1"] = T.FocalFix(1.0)
    fixes["A-GRAE p_bar=0.5"] = T.AGRAEFix(0.5)
    ps = np.linspace(0.01, 0.99, 99)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    rows = []
    for label, fix in fixes.items():
        for ax, reward in zip(axes, (1, 0)):
            bias = T.corrected_bias(ps, g, reward, fix)
            ax.plot(ps, bias, label=label, lw=2.2 if fix is None else 1.2, color="k" if fix is None else None)
            rows += [[label, reward, f"{p:.2f}", f"{b:.6f}"] for p, b in zip(ps, bias)]
    save_reward_panels(fig, axes, out, "fixes_bias", "E[reweighted A_hat | S] - A", f"G = {g}, anchor C = {anchor}",
                       ["method", "reward", "p", "bias"], rows)
    # where each fix reduces |bias| relative to GRPO, on both reward outcomes
    base = {r: np.abs(T.corrected_bias(ps, g, r)) for r in (0, 1)}
    summary = ["| method | share of p in (0, 1) where abs(bias) shrinks, r = 1 | same, r = 0 |", "|---|---|---|"]
    for label, fix in list(fixes.items())[1:]:
        shares = [np.mean(np.abs(T.corrected_bias(ps, g, r, fix)) < base[r]) for r in (1, 0)]
        summary.append(f"| {label} | {shares[0]:.2f} | {shares[1]:.2f} |")
    (out / "fixes_summary.md").write_text("\n".join(summary) + "\n")
    return ("fixes_bias.png", "Exact E[reweighted A_hat | S] - A for HA-DW (anchor 0.5, four lambdas), F-GRPO and "
                              "A-GRAE, for correct and wrong answers (table: where each reduces |bias|).")


ESTIMATORS = {"group_mean (Dr.GRPO)": ("group_mean", {}), "rloo": ("rloo", {}),
              "optimal_baseline kappa=0.5": ("optimal_baseline", {"kappa": 0.5}),
              "passk k=2 (vs its pass@2 target)": ("passk", {"k": 2}), "maxrl (vs its target)": ("maxrl", {}),
              "reinforce_pp": ("reinforce_pp", {}), "shrinkage": ("shrinkage", {})}
BATCH_OTHERS = (0.2, 0.5, 0.8)


def figure_estimators(out: Path, g: int = 8) -> str:
    ps = np.linspace(0.01, 0.99, 99)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    rows = []
    for label, (name, params) in ESTIMATORS.items():
        target = "own" if name in ("passk", "maxrl") else "pass@1"
        others = BATCH_OTHERS if name in TE.BATCH_ESTIMATORS else ()
        for ax, reward in zip(axes, (1, 0)):
            bias = TE.estimator_bias(name, ps, g, reward, others=others, target=target, **params)
            ax.plot(ps, bias, label=label, lw=2.2 if name == "group_mean" else 1.2, color="k" if name == "group_mean" else None,
                    ls="--" if others else "-")
            rows += [[name, reward, f"{p:.2f}", f"{b:.6f}"] for p, b in zip(ps, bias)]
    save_reward_panels(fig, axes, out, "estimators_bias", "E[A_hat | S, r] - A", f"G = {g}",
                       ["estimator", "reward", "p", "bias"], rows)
    return ("estimators_bias.png", f"Exact E[A_hat | S, r] - A of each advantage estimator, G = {g}, A = r - p (passk: "
                                   "k (1-p)^(k-1) (r - p), maxrl: (1 - (1-p)^G)(r - p)/p); dashed: batch estimators, this "
                                   f"prompt in a batch with prompts of success rates {BATCH_OTHERS}.")


def figure_rare_mode(out: Path, mc_groups: int, seed: int, mu: float = 0.6) -> str:
    ns = np.arange(1, 65)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = []
    for tau in (0.01, 0.05, 0.1):
        exact = T.rare_mode_miss_probability(ns, mu, tau)
        (line,) = ax.plot(ns, exact, label=f"tau = {tau} (peak at N = {ns[np.argmax(exact)]})")
        for n in (2, 8, 32):
            mc = T.mc_rare_mode_miss_probability(int(n), mu, tau, mc_groups // 4, seed)
            ax.errorbar(n, mc.estimate, yerr=2 * mc.stderr, fmt="o", ms=3, color=line.get_color())
        rows += [[tau, int(n), f"{v:.6f}"] for n, v in zip(ns, exact)]
    ax.set_xscale("log", base=2)
    ax.set(xlabel="group size N", ylabel="P(mixed group, rare mode unsampled)",
           title=f"F-GRPO: tail-miss probability, total success mu = {mu}")
    ax.plot([], [], "o", color="k", ms=3, label="Monte Carlo (±2 SE)")
    ax.legend(fontsize=8)
    save_figure(fig, out / "rare_mode_miss.png")
    write_csv(out / "rare_mode_miss.csv", ["tau", "N", "probability"], rows)
    return ("rare_mode_miss.png", "The probability that a group still produces a gradient while missing a rare correct "
                                  "mode: non-monotonic in N, worst at moderate group sizes.")


@attrs.frozen
class FiguresOptions:
    out: str = "theory"
    """Output folder."""
    mc_groups: int = attrs.field(default=200_000, validator=integer(1000))
    """Simulated groups per Monte-Carlo point."""
    seed: int = 0
    """Monte-Carlo seed."""


def main(argv: list[str] | None = None) -> Path:
    args, _ = parse_args(argv, FiguresOptions, "python -m experiments.claims.closed_forms", __doc__)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    steps = [
        lambda: figure_bias(out, args.mc_groups, args.seed),
        lambda: table_corollary1(out),
        lambda: figure_tail(out),
        lambda: figure_nonbinary(out, args.mc_groups, args.seed),
        lambda: figure_fixes(out),
        lambda: figure_estimators(out),
        lambda: figure_rare_mode(out, args.mc_groups, args.seed),
    ]
    figures, corollary = [], ""
    for step in tqdm(steps, desc="theory", file=sys.stderr):
        result = step()
        if isinstance(result[0], str) and result[0].startswith("|"):
            corollary, result = result
        figures.append(result)
    report = ["# The bias of group-relative advantages", "",
              "Generated by `python -m experiments.claims.closed_forms` from `algorithms/theory.py` "
              f"({args.mc_groups} simulated groups per Monte-Carlo point, seed {args.seed}).", "",
              "## Figures", ""]
    report += [f"- `{name}`: {line}" for name, line in figures]
    report += ["", "## Corollary 1 (exact)", "", corollary, "",
               "## Where each fix reduces |bias| (G = 8, anchor 0.5)", "", (out / "fixes_summary.md").read_text()]
    (out / "report.md").write_text("\n".join(report))
    print(f"wrote {len(figures)} figures, CSV tables and report.md to {out}/ in {time.perf_counter() - start:.1f} s")
    return out


if __name__ == "__main__":
    main()
