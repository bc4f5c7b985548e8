"""Student-t intervals: the t quantile and the t-interval of a mean, for grading suites and reports.

Quantiles come from ``scipy.special.stdtrit`` (the function behind
``scipy.stats.t.ppf``, bit for bit), so callers do not pay for importing
``scipy.stats`` (seconds on a small CPU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom (``scipy.stats.t.ppf(q, df)``)."""
    from scipy import special  # here, not at import: start-up time

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


def clustered_standard_error(values: Sequence[float], clusters: Sequence) -> float | None:
    """Standard error of the mean of ``values`` when they come in clusters (several samples of one prompt).

    The cluster-robust (Liang-Zeger, CR1) variance of a mean over N values in G clusters:

        SE² = G / (G - 1) · Σ_g (Σ_{i in g} (y_i - ȳ))² / N²

    With one value per cluster it is s² / N (s the ddof-1 std): the plain SE.  Samples of one prompt
    are correlated (they share the prompt's difficulty), so treating them as independent would shrink
    the SE by up to √(samples per prompt).  None when there are fewer than 2 clusters.
    """
    if len(values) != len(clusters):
        raise ValueError(f"clustered_standard_error needs one cluster per value: {len(values)} values, "
                         f"{len(clusters)} clusters")
    n = len(values)
    if n == 0:
        return None
    mean = math.fsum(values) / n
    sums: dict = {}
    for value, key in zip(values, clusters):
        sums[key] = sums.get(key, 0.0) + (value - mean)
    g = len(sums)
    if g < 2:
        return None
    return math.sqrt(g / (g - 1) * math.fsum(s * s for s in sums.values())) / n


def clustered_mean_with_ci(values: Sequence[float], clusters: Sequence, confidence: float = 0.95) -> MeanCI:
    """Mean with the interval mean ± t_{(1+level)/2, G-1} · clustered SE (G clusters); ``n`` counts clusters.

    With one value per cluster it is ``mean_with_ci``'s Student-t interval exactly."""
    if not values:
        raise ValueError("clustered_mean_with_ci needs at least one value, got none")
    mean = math.fsum(values) / len(values)
    se = clustered_standard_error(values, clusters)
    g = len(set(clusters))
    if se is None:
        return MeanCI(g, mean, None, None)
    half = t_quantile((1 + confidence) / 2, g - 1) * se
    return MeanCI(g, mean, mean - half, mean + half)
