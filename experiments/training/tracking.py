"""The run's loggers (TensorBoard event files; Weights & Biases, offline by default) and the
closing summary table.

    make_logger(["tensorboard", "wandb"], run_dir, config, config_text, history) -> Loggers
    logger.log(step, values); logger.log_samples(...); logger.log_histogram(...); logger.close()
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from experiments.training import metrics as M
from rlvr_env.verifier import extract_answer

LOGGERS = ("tensorboard", "wandb")
"""What ``train.loggers`` may name."""
NONFINITE_PREFIX = "nonfinite/"
WANDB_ID_FILE = "wandb-run-id"
"""The run's W&B id, in its run directory: a resumed run continues the same W&B run."""
WANDB_MISSING = "train.loggers: wandb is not installed; pip install 'rlvr-sim[wandb]'"


def split_nonfinite(values: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    """The scalars to write: the finite ones, and for each NaN / inf one its counter
    ``nonfinite/<tag>`` (steps so far at which ``tag`` was not finite; ``counts`` is updated) in
    its place. TensorBoard drops a non-finite scalar without a word; the counter shows it."""
    out = {}
    for key, value in values.items():
        if math.isfinite(value):
            out[key] = value
        else:
            counts[key] = counts.get(key, 0) + 1
            out[NONFINITE_PREFIX + key] = float(counts[key])
    return out


def sample_rows(prompts, rollout, rewards: torch.Tensor, count: int) -> list[tuple[str, str, str | None, float]]:
    """(prompt, completion, extracted answer, reward) of the first response of the first
    ``count`` groups (``prompts`` [N], ``rollout`` [N * G], ``rewards`` [N, G])."""
    rows = []
    for i in range(min(count, len(prompts))):
        text = rollout.texts[i * rollout.group_size]
        rows.append((prompts.texts[i], text, extract_answer(text), float(rewards[i, 0])))
    return rows


class TensorBoardLogger:
    """Scalars, text and histograms to ``<run_dir>/events.*``; ``tensorboard --logdir runs``.

    A non-finite value (e.g. a bucket with no mixed group this step) is not drawn as a spike:
    its counter ``nonfinite/<tag>`` is written instead (``split_nonfinite``). Nothing is written until the first event: then the event file is
    opened with ``config_text`` (the run's resolved config) at step 0 and, for a resumed run
    (``history``), the checkpoint's history (steps 1..N) in one new event file, after which
    the older event files are removed. TensorBoard then reads strictly increasing steps from
    a single file (no "out of order" purges); events past the checkpoint, from the
    interrupted part of the run, are dropped (sample texts and histograms of the resumed part
    are not rewritten).
    """

    def __init__(self, run_dir: Path, config_text: str | None = None, history: list[dict[str, float]] | None = None):
        self.run_dir, self.config_text, self.history = Path(run_dir), config_text, history
        self._writer: SummaryWriter | None = None
        self.nonfinite: dict[str, int] = {}

    @property
    def writer(self) -> SummaryWriter:
        if self._writer is None:
            older = sorted(self.run_dir.glob("events.out.tfevents.*")) if self.history is not None else []
            self._writer = SummaryWriter(log_dir=str(self.run_dir))
            if self.config_text is not None:
                self._writer.add_text("config", markdown_code(self.config_text), 0)
            for step, values in enumerate(self.history or (), start=1):
                self.log(step, values)
            self._writer.flush()
            for path in older:
                path.unlink(missing_ok=True)
        return self._writer

    def log(self, step: int, values: dict[str, float]) -> None:
        # One event per step holding every scalar (what add_scalar writes, one event per tag,
        # costs ~10x more: more than a tabular training step).
        writer = self.writer._get_file_writer()  # first: a resumed run's history is written (and counted) before
        scalars = [Summary.Value(tag=key, simple_value=value) for key, value in split_nonfinite(values, self.nonfinite).items()]
        writer.add_summary(Summary(value=scalars), step)

    def log_samples(self, step: int, prompts, rollout, rewards: torch.Tensor, count: int) -> None:
        """``sample_rows``: prompt, completion, extracted answer and reward, as one Markdown
        table (``samples``)."""
        self.writer.add_text("samples", samples_markdown(sample_rows(prompts, rollout, rewards, count)), step)

    def log_histogram(self, step: int, tag: str, values: torch.Tensor) -> None:
        if values.numel():
            self.writer.add_histogram(tag, values.detach().float().cpu(), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class WandbLogger:
    """The same scalars (``nonfinite/<tag>`` counters included), samples (a ``wandb.Table``)
    and histograms to a Weights & Biases run: name = the run directory's name, config = the
    run's config, project ``$WANDB_PROJECT`` (else rlvr-sim). Offline unless ``WANDB_MODE`` is
    set (files under ``<run_dir>/wandb/``, or ``$WANDB_DIR``; ``wandb sync`` uploads them).
    The run's id is kept in ``<run_dir>/wandb-run-id``: a resumed run continues that W&B run
    (its new steps; W&B keeps what it had). Starts at the first event, like TensorBoard's."""

    def __init__(self, run_dir: Path, config: dict[str, Any] | None = None,
                 history: list[dict[str, float]] | None = None):
        try:
            import wandb
        except ImportError:
            from algorithms import ConfigError

            raise ConfigError(WANDB_MISSING) from None
        self.wandb, self.run_dir, self.config = wandb, Path(run_dir), config
        self.nonfinite: dict[str, int] = {}
        for values in history or ():  # a resumed run: the counters go on from the checkpoint's
            split_nonfinite(values, self.nonfinite)
        self._run = None

    @property
    def run(self):
        if self._run is None:
            id_file = self.run_dir / WANDB_ID_FILE
            run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
            id_file.write_text(run_id + "\n")
            self._run = self.wandb.init(
                project=os.environ.get("WANDB_PROJECT") or "rlvr-sim", name=self.run_dir.name, id=run_id,
                resume="allow", config=self.config, dir=os.environ.get("WANDB_DIR") or str(self.run_dir),
                mode=os.environ.get("WANDB_MODE") or "offline", settings=self.wandb.Settings(console="off", silent=True))
        return self._run

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(split_nonfinite(values, self.nonfinite), step=step)

    def log_samples(self, step: int, prompts, rollout, rewards: torch.Tensor, count: int) -> None:
        table = self.wandb.Table(columns=["prompt", "completion", "extracted", "reward"],
                                 data=[list(r) for r in sample_rows(prompts, rollout, rewards, count)])
        self.run.log({"samples": table}, step=step)

    def log_histogram(self, step: int, tag: str, values: torch.Tensor) -> None:
        if values.numel():
            self.run.log({tag: self.wandb.Histogram(values.detach().float().cpu().numpy())}, step=step)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


class Loggers:
    """Several loggers as one: every call goes to each (``train.loggers=[tensorboard,wandb]``)."""

    def __init__(self, loggers: list):
        self.loggers = loggers

    @property
    def run_dir(self) -> Path | None:
        return self.loggers[0].run_dir if self.loggers else None

    @run_dir.setter
    def run_dir(self, path: Path) -> None:  # a new run's final folder (made unique when created)
        for logger in self.loggers:
            logger.run_dir = Path(path)

    def log(self, step: int, values: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log(step, values)

    def log_samples(self, step: int, prompts, rollout, rewards: torch.Tensor, count: int) -> None:
        for logger in self.loggers:
            logger.log_samples(step, prompts, rollout, rewards, count)

    def log_histogram(self, step: int, tag: str, values: torch.Tensor) -> None:
        for logger in self.loggers:
            logger.log_histogram(step, tag, values)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def make_logger(names, run_dir: Path, config: dict[str, Any] | None = None, config_text: str | None = None,
                history: list[dict[str, float]] | None = None):
    """The loggers ``names`` (``train.loggers``) of a run directory: one logger, or a ``Loggers``
    fan-out of several. ``wandb`` without the package: a ConfigError naming the extra."""
    made = [TensorBoardLogger(run_dir, config_text, history) if name == "tensorboard" else WandbLogger(run_dir, config, history)
            for name in names]
    return made[0] if len(made) == 1 else Loggers(made)


# (tag, label) rows of the summary; rows whose tag was never logged are left out.
SUMMARY_ROWS = [
    (M.EXACT_ACCURACY[0], "accuracy, exact (all prompts)"),
    (M.EXACT_ACCURACY[1], "  hard   (initial p < 1/3)"),
    (M.EXACT_ACCURACY[2], "  medium"),
    (M.EXACT_ACCURACY[3], "  easy   (initial p > 2/3)"),
    (M.BATCH_ACCURACY, "accuracy, sampled batch"),
    (M.DEGENERATE, "degenerate groups"),
    (M.RARE_SHARE, "rare correct mode, share of p"),
    (M.BIAS[0], "A_hat - A, hard   (< 0: under-est.)"),
    (M.BIAS[1], "A_hat - A, medium"),
    (M.BIAS[2], "A_hat - A, easy   (> 0: over-est.)"),
    (M.BELIEF, "HA-DW belief C_t"),
    (M.GAIN, "HA-DW gain eta_t"),
    (M.PHI[0], "mean Phi, correct"),
    (M.PHI[1], "mean Phi, incorrect"),
    (M.CLIP_FRAC, "clip fraction"),
    (M.EVAL_ACCURACY, "held-out accuracy (mean@n), all"),
    *((tag, f"  level {k}") for k, tag in enumerate(M.EVAL_LEVELS, start=1)),
]
"""The closing summary: (tag, label) rows, shown where the run logged the tag."""


def markdown_code(text: str) -> str:
    """Verbatim text in TensorBoard's Markdown (indented code block)."""
    return "\n".join("    " + line for line in text.splitlines())


def _cell(text: str | None, limit: int = 400) -> str:
    text = "" if text is None else text
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def samples_markdown(rows: list[tuple[str, str, str | None, float]]) -> str:
    """| prompt | completion | extracted answer | reward | rows as a Markdown table."""
    lines = ["| prompt | completion | extracted | reward |", "|---|---|---|---|"]
    lines += [f"| {_cell(p)} | {_cell(c)} | {_cell(a)} | {r:g} |" for p, c, a, r in rows]
    return "\n".join(lines)


def column(history: list[dict[str, float]], key: str) -> list[float]:
    return [h[key] for h in history if key in h and math.isfinite(h[key])]


def summary_table(history: list[dict[str, float]], title: str) -> str:
    """First, last and mean (over steps) of the main metrics, as an aligned text table."""
    lines = [title, f"{'metric':<38}{'first':>9}{'last':>9}{'mean':>9}"]
    lines.append("-" * len(lines[1]))
    for key, label in SUMMARY_ROWS:
        values = column(history, key)
        if values:
            mean = sum(values) / len(values)
            lines.append(f"{label:<38}{values[0]:>9.4f}{values[-1]:>9.4f}{mean:>9.4f}")
    return "\n".join(lines)
