"""Student-t intervals: the t quantile and the t-interval of a mean, for grading suites and reports.

Quantiles come from ``scipy.special.stdtrit`` (the function behind
``scipy.stats.t.ppf``, bit for bit), so callers do not pay for importing
``scipy.stats`` (seconds on a small CPU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import special


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom (``scipy.stats.t.ppf(q, df)``)."""
    return float(special.stdtrit(df, q))


def t_interval(mean: float, std: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided t-interval of a sample mean: mean ± t_{(1+level)/2, n-1} · std / √n.

    ``std`` is the sample standard deviation (ddof 1) of the n >= 2 values.  It assumes
    i.i.d. normal values (Student 1908): n - 1 degrees of freedom.
    """
    half = t_quantile((1 + level) / 2, n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


@dataclass(frozen=True)
class MeanCI:
    """A sample mean with a two-sided t-interval; low/high are None when n < 2."""

    n: int
    mean: float
    low: float | None
    high: float | None


def mean_with_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI:
    """Mean and Student-t confidence interval (``t_interval``), mean and s (ddof = 1) summed exactly (fsum).

    The t-interval (not the normal one) because per-category score counts are often small;
    for n = 1 the interval is undefined (None, None).
    """
    if not values:
        raise ValueError("mean_with_ci needs at least one value, got none")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return MeanCI(n, mean, None, None)
    s = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return MeanCI(n, mean, *t_interval(mean, s, n, confidence))


def mean_ci_by_category(
    scores: Sequence[tuple[str, float]], confidence: float = 0.95
) -> dict[str, MeanCI]:
    """``mean_with_ci`` per category, from (category, score) pairs; categories in first-seen order."""
    grouped: dict[str, list[float]] = {}
    for category, score in scores:
        grouped.setdefault(category, []).append(float(score))
    return {category: mean_with_ci(values, confidence) for category, values in grouped.items()}
