"""Statistics for comparing runs across seeds: t-intervals, Welch's test and Holm's correction.

Written out (not ``scipy.stats``' tests) so that the formulas are in view and tested against scipy; the t
distribution's CDF and quantile come from ``scipy.special``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtr, stdtrit

CONFIDENCE = 0.95
ALPHA = 0.05
INTERVAL_METHOD = "95% t-interval over seeds (mean +- t_{0.975, n-1} s / sqrt(n))"
TEST_METHOD = "Welch's two-sided t-test on the per-seed values, Holm-adjusted over the pairs of a group, alpha 0.05"


@dataclass(frozen=True)
class Summary:
    """n, mean, sample std (ddof 1; None for n = 1) and the 95% t-interval (None for n = 1)."""

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean and Student-t confidence interval of independent values (one per seed)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"summarize needs a non-empty list of numbers, got shape {x.shape}.")
    mean = float(x.mean())
    if len(x) == 1:
        return Summary(1, mean, None, None, None)
    std = float(x.std(ddof=1))
    half = float(stdtrit(len(x) - 1, 0.5 + confidence / 2)) * std / math.sqrt(len(x))
    return Summary(len(x), mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class WelchResult:
    statistic: float
    df: float
    p_value: float


def welch_test(a: Sequence[float], b: Sequence[float]) -> WelchResult | None:
    """Welch's unequal-variance t-test, two-sided (Welch 1947): t = (mean_a - mean_b) / sqrt(s_a^2/n_a +
    s_b^2/n_b), with the Welch-Satterthwaite degrees of freedom. None when either side has fewer than 2 values
    (no variance to test against). Two constant samples give p = 1 if their means are equal, else 0."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        return None
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff = float(x.mean() - y.mean())
    if vx + vy == 0:
        return WelchResult(0.0 if diff == 0 else math.copysign(math.inf, diff), math.nan, float(diff == 0))
    t = diff / math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    return WelchResult(float(t), float(df), float(2 * stdtr(df, -abs(t))))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (Holm 1979): the i-th smallest of m p-values becomes
    max_{j <= i} min(1, (m - j + 1) p_(j)). Controls the family-wise error rate over all pairs."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for position, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - position) * p_values[index]))
        adjusted[index] = running
    return adjusted
