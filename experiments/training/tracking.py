"""TensorBoard event files and the closing summary table."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from experiments.training import metrics as M
from rlvr_env.verifier import extract_answer

class TensorBoardLogger:
    """Scalars, text and histograms to ``<run_dir>/events.*``; ``tensorboard --logdir runs``.

    Non-finite values (e.g. a bucket with no mixed group this step) are skipped rather
    than drawn as spikes. Nothing is written until the first event: then the event file is
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
        scalars = [Summary.Value(tag=key, simple_value=value) for key, value in values.items() if math.isfinite(value)]
        self.writer._get_file_writer().add_summary(Summary(value=scalars), step)

    def log_samples(self, step: int, prompts, rollout, rewards: torch.Tensor, count: int) -> None:
        """The first response of the first ``count`` groups (``prompts`` [N], ``rollout`` [N * G],
        ``rewards`` [N, G]): prompt, completion, extracted answer and reward, as one Markdown
        table (``samples``)."""
        rows = []
        for i in range(min(count, len(prompts))):
            text = rollout.texts[i * rollout.group_size]
            rows.append((prompts.texts[i], text, extract_answer(text), float(rewards[i, 0])))
        self.writer.add_text("samples", samples_markdown(rows), step)

    def log_histogram(self, step: int, tag: str, values: torch.Tensor) -> None:
        if values.numel():
            self.writer.add_histogram(tag, values.detach().float().cpu(), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


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
