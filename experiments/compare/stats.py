"""Small statistics shared by the comparison tools (study, arena, sweeps, report)."""

from __future__ import annotations

import math
import statistics

# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (then ~normal).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan
    t = T975[n - 2] if n - 1 <= len(T975) else 1.96
    return mean, t * statistics.stdev(values) / math.sqrt(n)
