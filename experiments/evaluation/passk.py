"""Accuracy estimators over n samples per problem, and bootstrap intervals over problems.

    pass_at_k(correct [N, n], k) -> [N]   unbiased: 1 - C(n - c, k) / C(n, k)  (Chen et al. 2021)
    maj_at_k(answers, correct, k) -> [N]  majority vote over the first k extracted answers
    exact_pass_at_k(p [N], k) -> [N]      1 - (1 - p)^k, where p is known (tabular policy)
    bootstrap_ci(values [N], ...)         95% percentile interval of the mean over problems
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def pass_at_k(correct: np.ndarray, k: int) -> np.ndarray:
    """[N] unbiased pass@k of each problem from its n samples ``correct`` [N, n] (bool).

    1 - C(n - c, k) / C(n, k) computed as a running product (no overflow for n = 1024).
    """
    correct = np.asarray(correct, dtype=bool)
    n = correct.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n = {n}, got k = {k}")
    c = correct.sum(axis=1)  # (N,)
    # C(n - c, k) / C(n, k) = prod_{i = n - k + 1}^{n} (1 - c / i), zero once n - c < k.
    i = np.arange(n - k + 1, n + 1, dtype=np.float64)  # (k,)
    miss = np.prod(np.clip(1.0 - c[:, None] / i[None, :], 0.0, None), axis=1)
    return np.where(n - c < k, 1.0, 1.0 - miss)


def maj_at_k(answers: list[list[str | None]], correct: np.ndarray, k: int) -> np.ndarray:
    """[N] 1.0 where the most frequent extracted answer among the first k samples is correct.

    ``answers`` [N][n] are normalised extracted answers (None: no answer, never voted for);
    ``correct`` [N, n]. Ties go to the answer seen first; no answer at all scores 0.
    """
    correct = np.asarray(correct, dtype=bool)
    out = np.zeros(len(answers))
    for row, (ans, ok) in enumerate(zip(answers, correct)):
        votes = Counter(a for a in ans[:k] if a is not None)
        if not votes:
            continue
        top = max(votes.values())
        winner = next(a for a in ans[:k] if a is not None and votes[a] == top)  # first seen among the tied
        out[row] = float(ok[ans.index(winner)])
    return out


def exact_pass_at_k(p: np.ndarray, k: int) -> np.ndarray:
    """[N] the probability that k independent samples contain a correct one: 1 - (1 - p)^k."""
    return 1.0 - (1.0 - np.asarray(p, dtype=np.float64)) ** k


def bootstrap_ci(values: np.ndarray, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` [N] over problems resampled with replacement."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
