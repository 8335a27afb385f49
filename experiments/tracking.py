"""TensorBoard event files and the closing summary table."""

from __future__ import annotations

import math
from pathlib import Path

from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter


class TensorBoardLogger:
    """Scalars to ``<run_dir>/events.*``; ``tensorboard --logdir runs`` shows them.

    Non-finite values (e.g. a bucket with no mixed group this step) are skipped rather
    than drawn as spikes. On resume, events after the checkpoint's step are purged.
    """

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def log(self, step: int, values: dict[str, float]) -> None:
        # One event per step holding every scalar (what add_scalar writes, one event per tag,
        # costs ~10x more: more than a tabular training step).
        scalars = [Summary.Value(tag=key, simple_value=value) for key, value in values.items() if math.isfinite(value)]
        self.writer._get_file_writer().add_summary(Summary(value=scalars), step)

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
]


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
