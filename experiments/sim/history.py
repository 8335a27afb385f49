"""A run's per-step metrics, compactly: what ``Trainer.history`` holds, as one array.

A sweep of 100 runs x 1000 steps x ~35 tags would be 3.5 million Python floats in
dicts (hundreds of MB); ``History`` keeps them as a float32 array [S, M] and gives the
Trainer's list of dicts back on demand.
"""

from __future__ import annotations

import math

import numpy as np



class History:
    """Metrics of one run: ``keys`` [M] tags, ``values`` [S, M] float32 (step s is step s + 1
    of the run), ``logged`` [S, M] bool where a tag was logged (None: every tag every step)."""

    def __init__(self, keys: tuple[str, ...], values: np.ndarray, logged: np.ndarray | None = None):
        if values.ndim != 2 or values.shape[1] != len(keys):
            raise ValueError(f"values {values.shape} do not match {len(keys)} keys")
        self.keys = tuple(keys)
        self.values = values
        self.logged = logged
        self.index = {k: i for i, k in enumerate(self.keys)}

    @classmethod
    def from_dicts(cls, rows: list[dict[str, float]]) -> History:
        """From a Trainer's ``history`` (tags may differ between steps)."""
        keys = tuple(dict.fromkeys(k for row in rows for k in row))
        values = np.array([[row.get(k, math.nan) for k in keys] for row in rows], dtype=np.float32).reshape(len(rows), len(keys))
        logged = np.array([[k in row for k in keys] for row in rows], dtype=bool).reshape(values.shape)
        return cls(keys, values, None if logged.all() else logged)

    def __len__(self) -> int:
        return self.values.shape[0]

    def column(self, key: str) -> np.ndarray:
        """[S] values of ``key`` (NaN where not logged or not finite)."""
        if key not in self.index:
            raise KeyError(f"metric {key!r} was not logged; logged: {', '.join(self.keys)}")
        return self.values[:, self.index[key]].astype(np.float64)

    def final(self, key: str, last: int = 1) -> float:
        """Mean of ``key`` over the last ``last`` steps, ignoring NaN (NaN if none is finite)."""
        tail = self.column(key)[-last:]
        tail = tail[np.isfinite(tail)]
        return float(tail.mean()) if tail.size else math.nan

    def as_dicts(self) -> list[dict[str, float]]:
        """The Trainer's format: one {tag: value} dict per step."""
        rows = self.values.tolist()
        if self.logged is None:
            return [dict(zip(self.keys, row)) for row in rows]
        return [{k: v for k, v, on in zip(self.keys, row, mask) if on} for row, mask in zip(rows, self.logged.tolist())]

    def write_events(self, logger, every: int = 1) -> None:
        """The history through ``logger`` (a run directory's ``TensorBoardLogger``: every
        ``every``-th step and the last), then closed."""
        try:
            rows = self.as_dicts()
            for step, row in enumerate(rows, start=1):
                if step % every == 0 or step == len(rows):
                    logger.log(step, row)
        finally:
            logger.close()
