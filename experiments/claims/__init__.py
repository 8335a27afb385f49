"""The papers' claims as experiments: ``python -m experiments.claims names=[a,b,...]|all out=DIR``.

    python -m experiments.claims names=all out=runs/claims           # the tabular suite a-f
    python -m experiments.claims names=all out=runs/claims report=docs/report   # and the report
    python -m experiments.claims names=g out=runs/claims             # tiny-qwen3 on arithmetic (slow on a CPU)
    python -m experiments.claims names=a out=/tmp/c seeds=2 train.steps=5   # quick check, run-config overrides
    python -m experiments.claims.report runs=runs/claims out=docs/report

Each experiment (``EXPERIMENTS``) names its settings (label -> Hydra overrides), seeds and
the rule that turns its runs into rows of the claim table (``rules.ASSESS``). Runs go
through the sweep machinery (experiments.sim): tabular settings that share shapes are one
batched simulation, DAPO and language-model runs are single Trainer runs in worker
processes (``runner``). Every run writes ``DIR/<experiment>/<label>,seed=<s>/``
(config.yaml, TensorBoard events); batched runs also log ``modes/*`` and ``pass@k/*``
(exact, from the answer table: ``runner.probe``). ``DIR/<experiment>/experiment.json``
lists the runs, ``DIR/suite.json`` the wall times; running an experiment again replaces its
runs. ``experiments.claims.report`` builds the claim table and the figures from those files.
"""

from __future__ import annotations

import copy

import attrs

from experiments.sim import RunSpec
from experiments.training.build import compose_config

PASS_K = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SEEDS = 10
# Tabular sizes (README, "Checking the papers' claims"): the default bandit (256 prompts,
# 16 answers, 2 correct modes), P = 64, G = 8, Adam lr 0.01; four minibatches per step
# (off-policy updates, so that grpo, gspo and cispo differ); 100 steps, where GRPO is
# mid-way (all 0.78, hard 0.50), far from the ceiling.
TABULAR = ("train.steps=100", "train.minibatches=4", "train.progress=false", "train.checkpoint_every=0")
# SGD's learning rate: GRPO then ends about where it does under Adam (0.77 against 0.78 at step 100).
SGD = ("optim.name=sgd", "optim.lr=3")
# A bandit with mostly hard prompts (Beta(0.5, 2), p down to 0.002), so that pass@256 < 1.
RARE = ("env.difficulty=beta", "env.beta=[0.5,2.0]", "env.p_range=[0.002,0.98]")
LAMBDAS = (0.5, 0.8, 1.0, 1.3, 1.5, 1.7, 2.0)
ANCHORS = (0.4, 0.5, 0.6)
BASES = ("grpo", "gspo", "dapo", "cispo")
DEFAULT_RUN = "on-policy-200"  # label suffix of (a)'s second configuration: the project's default run


@attrs.frozen
class Experiment:
    """One claim's experiment: its settings, seeds, and how its runs are built."""

    name: str
    """a-g, as in the issue; runs go to ``DIR/<name>/``."""
    title: str
    """Section title in the report."""
    claim: str
    """What the papers say, in one sentence."""
    settings: dict[str, tuple[str, ...]]
    """label -> Hydra overrides (on top of ``base``)."""
    base: tuple[str, ...] = TABULAR
    seeds: int = SEEDS
    trainer_runs: tuple[str, ...] = ()
    """Labels also run once (seed 0) by the single-run Trainer, as ``<label>,trainer``: it logs
    the reweighting weights' histogram (reweight/weights), which batched runs do not."""
    tabular: bool = True
    note: str = ""
    """Sizes and choices, for the report."""

    def command(self) -> str:
        return f"python -m experiments.claims names={self.name} out=runs/claims"

    def specs(self, seeds: int | None = None, extra: tuple[str, ...] = ()) -> list[RunSpec]:
        """One RunSpec per label and seed (name ``<experiment>/<label>,seed=<s>``), and the trainer runs."""
        out = []
        for label, overrides in self.settings.items():
            cfg = compose_config(*self.base, *overrides, *extra, "seed=0")
            for seed in range(self.seeds if seeds is None else seeds):
                out.append(RunSpec(f"{self.name}/{label},seed={seed}", {**copy.deepcopy(cfg), "seed": seed}, label))
        for label in self.trainer_runs:
            cfg = compose_config(*self.base, *self.settings[label], *extra, "seed=0", "train.samples_every=5")
            out.append(RunSpec(f"{self.name}/{label},trainer", cfg, f"{label},trainer"))
        return out


def _algo(*names: str) -> dict[str, tuple[str, ...]]:
    return {n: (f"algo={n}",) for n in names}


EXPERIMENTS = {e.name: e for e in [
    Experiment("a", "HA-DW on four base algorithms",
               "HA-DW improves every base algorithm, most on hard prompts (+3.4 points on MATH500 Hard).",
               {**_algo(*(x for b in BASES for x in (b, f"{b}_hadw"))),
                **{f"{n},{DEFAULT_RUN}": (f"algo={n}", "train.minibatches=1", "train.steps=200") for n in ("grpo", "grpo_hadw")}},
               trainer_runs=("grpo_hadw",),
               note="dapo and dapo_hadw are single Trainer runs (dynamic sampling is not batched). With one-token "
                    "responses and ratios inside the clip range, grpo and cispo compute the same gradient (identical "
                    "numbers); gspo's sequence-ratio clip (3e-4 / 4e-4) clips a large share of the responses "
                    "(loss/clip_frac in the table), so it learns slower. "
                    f"`{DEFAULT_RUN}`: a second configuration, the project's default run (one on-policy update per "
                    "step, 200 steps), as a check of how much the verdict depends on the setting."),
    Experiment("b", "Rollouts: G = 8 with HA-DW against G = 16 without",
               "GRPO + HA-DW with G = 8 beats GRPO with G = 16, at half the sampling cost.",
               {"grpo_hadw,G=8": ("algo=grpo_hadw", "train.group_size=8"),
                "grpo,G=16": ("algo=grpo", "train.group_size=16"),
                "grpo,G=8": ("algo=grpo", "train.group_size=8")}),
    Experiment("c", "lambda_scale under Adam and SGD",
               "HA-DW works best with lambda_scale in 1.3-1.5.",
               {**{f"{opt},lambda={lam}": ("algo=grpo_hadw", f"reweight.lambda_scale={lam}", *extra)
                   for opt, extra in (("adam", ()), ("sgd", SGD)) for lam in LAMBDAS},
                "adam,none": ("algo=grpo",), "sgd,none": ("algo=grpo", *SGD),
                "sgd,none,lr=4.5": ("algo=grpo", *SGD, "optim.lr=4.5")},
               note="SGD lr 3: GRPO then ends about where it does under Adam. `sgd,none,lr=4.5` is GRPO with "
                    "1.5 times the step, the scale lambda 1.5 gives HA-DW under SGD (a scale-matched baseline)."),
    Experiment("d", "HA-DW's anchor",
               "The dynamic belief anchor is best; fixed anchors (0.4 / 0.5 / 0.6) still beat no reweighting.",
               {"dynamic": ("algo=grpo_hadw",),
                **{f"fixed={c}": ("algo=grpo", "reweight=hadw_fixed", f"reweight.anchor={c}") for c in ANCHORS},
                "window": ("algo=grpo", "reweight=hadw_window"), "none": ("algo=grpo",)}),
    Experiment("e", "F-GRPO on a bandit with rare correct modes",
               "F-GRPO raises pass@256 by 3-6 points and keeps pass@1; the rare mode's mass can shrink while "
               "the total correct mass grows; the miss probability is non-monotonic in G.",
               _algo("grpo", "grpo_focal"), base=(*TABULAR, *RARE),
               note="Bank: Beta(0.5, 2) initial p in [0.002, 0.98]; rare mode 10% of the correct mass; focal gamma 1."),
    Experiment("f", "A-GRAE against GRPO",
               "Suppressing correct-answer advantages helps exploration; an easy-to-hard curriculum learns fastest.",
               {"grpo": ("algo=grpo",), **{f"agrae,alpha={a}": ("algo=grpo_agrae", f"reweight.alpha={a}") for a in (0.5, 1.0, 2.0)}},
               base=(*TABULAR, *RARE),
               note="alpha scales the suppression of positive advantages (x min(1, p_bar / alpha)): larger alpha, "
                    "more suppression. The schedule (focus weight p_bar on hard prompts) is A-GRAE's own; "
                    "other curricula are not registered reweighters, so they are not compared."),
    Experiment("g", "HA-DW on tiny-qwen3, arithmetic",
               "HA-DW improves held-out accuracy and yields longer responses.",
               _algo("grpo", "grpo_hadw"), base=("policy=tiny-qwen3", "env=arithmetic", "train.steps=200",
                                                 "train.progress=false"),
               seeds=5, tabular=False,
               note="tiny-qwen3's preset with env=arithmetic, 200 steps instead of 300 (each run takes minutes on 2 "
                    "CPU cores): warm start with label smoothing 0.1, P = 16, G = 8, Adam lr 3e-4, "
                    "4096 training problems, held-out mean@4 on 500 problems every 50 steps. "
                    "Responses are the boxed answer alone (no reasoning), so their length says little here."),
]}
