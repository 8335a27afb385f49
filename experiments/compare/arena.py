"""Train several algorithms side by side on one prompt stream: ``arena=[grpo,grpo_hadw]``.

Every learner has its own policy, optimizer, reweighter and TensorBoard run
(``<log_dir>/<arena run>/<algo>``); each step all of them answer the same prompts (drawn
once from the seeded task), so per-step differences are paired. The closing summary adds
a paired comparison against the first learner.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm

from algorithms import ConfigError
from experiments.compare.stats import mean_ci
from experiments.training import metrics as M
from experiments.training.build import override_key
from experiments.training.lifecycle import TrainingRun
from experiments.training.tracking import summary_table

PAIRED_METRICS = M.FINAL_ACCURACY


def compose_learners(names: list[str], overrides: list[str]) -> list[dict]:
    from hydra import compose

    base = [o for o in overrides if override_key(o) not in ("arena", "algo")]
    return [OmegaConf.to_container(compose(config_name="config", overrides=[*base, f"algo={n}"]), resolve=True)
            for n in names]


class SharedPrompts:
    """One seeded prompt stream for every learner: ``draw`` once per step, then each learner's
    trainer reads the same batch (``Trainer.prompt_source``)."""

    def __init__(self, task, num: int):
        self.task, self.num, self.current = task, num, None

    def draw(self) -> None:
        self.current = self.task.sample_prompts(self.num)

    def __call__(self, num: int):
        return self.current


def run_arena(names: list[str], overrides: list[str]) -> dict:
    if any(override_key(o) == "resume" and not o.endswith("=null") for o in overrides):
        raise ConfigError("arena: resume is not supported for arena runs; resume each learner's run directory alone")
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"arena: needs two or more distinct algorithm presets, got {names}")
    configs = compose_learners(names, overrides)
    root = Path(configs[0]["train"]["log_dir"]) / f"arena-{'-vs-'.join(names)}-s{configs[0]['seed']}-{datetime.now():%Y%m%d-%H%M%S}"
    stream = SharedPrompts(None, configs[0]["train"]["prompts_per_step"])
    runs = {n: TrainingRun.prepare(c, root / n, prompt_source=stream) for n, c in zip(names, configs)}  # all validated
    with contextlib.ExitStack() as stack:
        for run in runs.values():
            stack.enter_context(run.commit())
        trainers = {n: r.trainer for n, r in runs.items()}
        stream.task = trainers[names[0]].task  # the first learner's seeded task draws the stream
        steps = trainers[names[0]].params.steps
        start = time.perf_counter()
        try:
            for _ in tqdm(range(steps), desc="arena", file=sys.stderr, disable=not configs[0]["train"]["progress"]):
                stream.draw()
                for t in trainers.values():
                    t.train_step()
                    if t.params.checkpoint_every and t.step % t.params.checkpoint_every == 0:
                        t.save()
        finally:
            for t in trainers.values():
                t.save()
    elapsed = time.perf_counter() - start
    for n, t in trainers.items():
        print(summary_table(t.history, f"{n} (arena, {t.step} steps, seed {configs[0]['seed']})"), end="\n\n")
    print(paired_table(trainers, names, elapsed))
    print(f"\narena directory: {root}   (tensorboard --logdir {root})")
    return trainers


def paired_table(trainers: dict, names: list[str], elapsed: float) -> str:
    """Final metrics per learner, and the per-step paired difference against the first."""
    base = trainers[names[0]].history
    lines = [f"paired comparison on identical prompts ({len(base)} steps, {elapsed:.1f} s)",
             f"{'metric':<18}" + "".join(f"{n:>14}" for n in names)]
    for key in PAIRED_METRICS:
        finals = [trainers[n].history[-1].get(key, math.nan) for n in names]
        if all(math.isfinite(v) for v in finals):
            lines.append(f"{key:<18}" + "".join(f"{v:>14.4f}" for v in finals))
    for n in names[1:]:
        diffs = [b[M.BATCH_ACCURACY] - a[M.BATCH_ACCURACY] for a, b in zip(base, trainers[n].history)]
        m, h = mean_ci(diffs)
        wins = sum(d > 0 for d in diffs)
        lines.append(f"{n} - {names[0]}: batch accuracy per step {m:+.4f} ± {h:.4f} (95% CI over steps), "
                     f"ahead on {wins}/{len(diffs)} steps, final exact accuracy "
                     f"{trainers[n].history[-1].get(M.EXACT_ACCURACY[0], math.nan) - base[-1].get(M.EXACT_ACCURACY[0], math.nan):+.4f}")
    return "\n".join(lines)
