"""The report's estimators: replicate summaries, Welch's t-test, the paired bootstrap, Holm.

Pure functions of numpy arrays; every interval is two-sided 95% unless a
caller passes another ``level``.  Student-t quantiles and the t-interval come
from ``judges.stats.intervals``, tail probabilities from ``scipy.special.stdtr``
(the function behind ``scipy.stats.t.sf``), so a report does not pay for
importing ``scipy.stats`` (seconds on a small CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from judges.stats.intervals import t_interval, t_quantile

DEFAULT_B = 2000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Summary:
    """Mean over replicates (seeds) with the sample std and a t-interval; std/CI are NaN for n < 2."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


def summarize(values, level: float = 0.95) -> Summary:
    """Mean, std (ddof 1) and the t-interval mean ± t_{(1+level)/2, n-1} · s / √n over replicates.

    The t-interval assumes the replicate values are i.i.d. normal (Student 1908);
    with n seeds it has n - 1 degrees of freedom.
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Summary(n, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    return Summary(n, mean, std, *t_interval(mean, std, n, level))


@dataclass(frozen=True)
class Comparison:
    """A difference ``treatment - reference`` with its CI, the test that produced its p-value, and n."""

    diff: float
    ci_low: float
    ci_high: float
    p: float
    test: str
    n: int  # prompts (paired bootstrap) or total replicates (Welch)


def welch(treatment, reference, level: float = 0.95) -> Comparison:
    """Welch's unequal-variance t-test of mean(treatment) - mean(reference) over replicates.

    SE = sqrt(s_a²/n_a + s_b²/n_b); degrees of freedom by Welch-Satterthwaite,
    df = SE⁴ / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1)) (Welch 1947).  The CI is
    diff ± t_{(1+level)/2, df} · SE.  Needs at least two replicates on each side;
    otherwise everything but the difference is NaN.
    """
    a, b = np.asarray(treatment, float), np.asarray(reference, float)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return Comparison(diff, math.nan, math.nan, math.nan, "none (needs 2+ seeds per level)", len(a) + len(b))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        return Comparison(diff, diff, diff, p, "welch", len(a) + len(b))
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile((1 + level) / 2, df) * se
    p = 2 * float(special.stdtr(df, -abs(diff) / se))  # two-sided: 2 P(T_df <= -|t|), t = diff / SE
    return Comparison(diff, diff - half, diff + half, p, "welch", len(a) + len(b))


def paired_bootstrap(treatment, reference, b: int = DEFAULT_B, seed: int = DEFAULT_SEED,
                     level: float = 0.95) -> Comparison:
    """Paired bootstrap over prompts of mean(treatment_i - reference_i).

    ``treatment`` and ``reference`` are per-prompt scores aligned by prompt.
    Each of ``b`` replicates resamples prompts with replacement (numpy
    ``default_rng(seed)``, so the result is reproducible) and takes the mean
    difference d*.  CI: the percentile interval of d* (Efron & Tibshirani 1993,
    ch. 13).  Two-sided p-value by the shifted bootstrap (ibid., §16.4): the
    null distribution is d* - d̂, and p = (1 + #{|d* - d̂| >= |d̂|}) / (b + 1).
    """
    d = np.asarray(treatment, float) - np.asarray(reference, float)
    n = len(d)
    if n == 0:
        return Comparison(math.nan, math.nan, math.nan, math.nan, "none (no shared prompts)", 0)
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, n, size=(b, n))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    extreme = int(np.sum(np.abs(boot - observed) >= abs(observed) - 1e-12))
    p = (1 + extreme) / (b + 1)
    return Comparison(observed, float(low), float(high), float(p), f"paired bootstrap (B={b})", n)


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979); NaN entries stay NaN and do not count in m.

    With the m valid p-values sorted ascending p_(1) <= ... <= p_(m), the adjusted
    value of p_(i) is max_{j <= i} min(1, (m - j + 1) · p_(j)).
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for rank, idx in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out.tolist()
