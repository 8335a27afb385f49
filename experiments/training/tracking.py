"""TensorBoard event files and the closing summary table."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from rlvr_env.verifier import extract_answer

CONFIG_FILE = "config.yaml"  # the resolved config a run directory holds (written before the logger starts)


class TensorBoardLogger:
    """Scalars, text and histograms to ``<run_dir>/events.*``; ``tensorboard --logdir runs``.

    Non-finite values (e.g. a bucket with no mixed group this step) are skipped rather
    than drawn as spikes. On resume, the events are rewritten into one file (``resume``). A new
    run writes its resolved ``config.yaml`` as text at step 0.
    """

    def __init__(self, run_dir: Path):
        self.writer = SummaryWriter(log_dir=str(run_dir))
        config = Path(run_dir) / CONFIG_FILE
        if config.is_file():
            self.writer.add_text("config", markdown_code(config.read_text()), 0)

    @classmethod
    def resume(cls, run_dir: Path, history: list[dict[str, float]]) -> "TensorBoardLogger":
        """A logger for a resumed run: one new event file holding the config and the
        checkpoint's history (steps 1..N), then the older event files are removed. TensorBoard
        then reads strictly increasing steps from a single file (no "out of order" purges), and
        events past the checkpoint, from the interrupted part of the run, are dropped (sample
        texts and histograms of the resumed part of the run are not rewritten)."""
        older = sorted(Path(run_dir).glob("events.out.tfevents.*"))
        logger = cls(run_dir)
        for step, values in enumerate(history, start=1):
            logger.log(step, values)
        logger.writer.flush()
        for path in older:
            path.unlink(missing_ok=True)
        return logger

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
        self.writer.close()


# (tag, label) rows of the summary; rows whose tag was never logged are left out.
SUMMARY_ROWS = [
    ("accuracy/all", "accuracy, exact (all prompts)"),
    ("accuracy/hard", "  hard   (initial p < 1/3)"),
    ("accuracy/medium", "  medium"),
    ("accuracy/easy", "  easy   (initial p > 2/3)"),
    ("accuracy/batch", "accuracy, sampled batch"),
    ("groups/degenerate_frac", "degenerate groups"),
    ("modes/rare_share", "rare correct mode, share of p"),
    ("bias/hard", "A_hat - A, hard   (< 0: under-est.)"),
    ("bias/medium", "A_hat - A, medium"),
    ("bias/easy", "A_hat - A, easy   (> 0: over-est.)"),
    ("hadw/belief", "HA-DW belief C_t"),
    ("hadw/eta", "HA-DW gain eta_t"),
    ("phi/correct", "mean Phi, correct"),
    ("phi/incorrect", "mean Phi, incorrect"),
    ("loss/clip_frac", "clip fraction"),
    ("eval/accuracy", "held-out accuracy (mean@n), all"),
    *((f"eval/level{k}", f"  level {k}") for k in range(1, 6)),
]


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
