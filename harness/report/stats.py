"""The report's estimators: replicate summaries, Welch, the paired bootstrap over prompts, the
seed-paired t and crossed bootstrap over seeds and prompts, variance components, Holm, BH, TOST.

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
    se: float = math.nan  # the standard error behind p (and TOST), NaN when undefined
    df: float = math.nan  # its Student-t degrees of freedom (inf: normal)


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
    if se == 0:  # no spread on either side: the test is undefined (not p = 0, as until December 2026)
        return Comparison(diff, diff, diff, math.nan, "welch (zero variance: p undefined)", len(a) + len(b), 0.0)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile((1 + level) / 2, df) * se
    p = 2 * float(special.stdtr(df, -abs(diff) / se))  # two-sided: 2 P(T_df <= -|t|), t = diff / SE
    return Comparison(diff, diff - half, diff + half, p, "welch", len(a) + len(b), se, df)


def paired_bootstrap(treatment, reference, b: int = DEFAULT_B, seed: int = DEFAULT_SEED,
                     level: float = 0.95) -> Comparison:
    """Paired bootstrap over prompts of mean(treatment_i - reference_i).

    ``treatment`` and ``reference`` are per-prompt scores aligned by prompt.
    Each of ``b`` replicates resamples prompts with replacement (numpy
    ``default_rng(seed)``, so the result is reproducible) and takes the mean
    difference d*.  CI: the percentile interval of d* (Efron & Tibshirani 1993,
    ch. 13).  The two-sided p is the paired t-test's over prompts (``paired_t_over_prompts``):
    a bootstrap p cannot go below 1/(B + 1), which made every Holm-adjusted p of a
    large family non-significant (until December 2026 p was the shifted bootstrap's).
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
    se = float(d.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return Comparison(observed, float(low), float(high), paired_t_over_prompts(d), f"paired bootstrap (B={b})", n,
                      se, n - 1)


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


def _t_p(estimate: float, se: float, df: float) -> float:
    """Two-sided p of estimate / se against Student's t with ``df``; NaN when se is 0 or not finite.

    A standard error of 0 (every replicate identical) leaves the test undefined:
    p is NaN, never 0 (until December 2026 Welch returned p = 0 for any nonzero
    difference with zero spread).
    """
    if not se > 0 or not math.isfinite(se):
        return math.nan
    return 2 * float(special.stdtr(df, -abs(estimate) / se))


def seed_paired_t(treatment, reference, level: float = 0.95) -> Comparison:
    """The t interval of the per-seed differences d_s = m_treatment,s - m_reference,s (matched seeds).

    ``treatment`` and ``reference`` are (seeds, prompts) arrays of per-prompt
    scores on the shared prompts, row s of both trained with the same seed.  Each
    d_s is one whole replicate (training seed and the run's per-prompt noise), so
    mean(d) ± t_{(1+level)/2, S-1} · sd(d)/√S covers seed-to-seed variance with
    S - 1 degrees of freedom; it is conditional on the prompt set.  p from the
    same t statistic (no bootstrap floor).
    """
    a, r = np.asarray(treatment, float), np.asarray(reference, float)
    d = a.mean(axis=1) - r.mean(axis=1)
    n_seeds = len(d)
    diff = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n_seeds)
    half = t_quantile((1 + level) / 2, n_seeds - 1) * se
    if se == 0:
        return Comparison(diff, diff, diff, math.nan, f"seed-paired t ({n_seeds} seeds; zero spread: p undefined)",
                          a.shape[1], 0.0, n_seeds - 1)
    return Comparison(diff, diff - half, diff + half, _t_p(diff, se, n_seeds - 1),
                      f"seed-paired t ({n_seeds} seeds)", a.shape[1], se, n_seeds - 1)


def crossed_bootstrap(treatment, reference, b: int = DEFAULT_B, seed: int = DEFAULT_SEED,
                      level: float = 0.95) -> Comparison:
    """Two-level (crossed) bootstrap of mean(treatment) - mean(reference) over seeds and prompts.

    ``treatment`` (S_a, P) and ``reference`` (S_r, P) are per-prompt scores on the
    shared prompts, one row per seed (S_a, S_r >= 2).  Each of ``b`` replicates
    draws P prompt indices shared by both levels (keeping the pairing) and,
    independently per level, S seeds with replacement, and takes the difference
    of the resampled grand means.  A crossed bootstrap of raw rows counts the
    seed x prompt noise twice (McCullagh 2000), so a level is resampled as its
    per-prompt means plus seed offsets e_s = (m_s - m̄)·c·√(S/(S - 1)): c removes
    the residual's share σ²_res/P from the seed means' variance (moment estimate
    of the seed component, ``seed_variance``), √(S/(S-1)) undoes the (S-1)/S
    shrinkage of resampling S values (Davison & Hinkley 1997, §3.8).  The interval is
    studentized, diff ± t_{(1+level)/2, df} · SE*, SE* the replicates' sd and df
    by Welch-Satterthwaite over the seed and prompt components (a percentile
    interval of 2-5 seeds under-covers); p from the same t statistic (no 1/(B+1) floor).
    """
    a, r = np.asarray(treatment, float), np.asarray(reference, float)
    n_prompts = a.shape[1]
    diff = float(a.mean() - r.mean())
    rng = np.random.default_rng(seed)
    prompt_counts = np.zeros((b, n_prompts))
    np.add.at(prompt_counts, (np.arange(b)[:, None], rng.integers(0, n_prompts, (b, n_prompts))), 1)
    reps = np.zeros(b)
    for x, sign in ((a, 1.0), (r, -1.0)):
        s = len(x)
        means = x.mean(axis=1)
        spread = means.var(ddof=1)
        shrink = math.sqrt(seed_variance(x) / spread) if spread > 0 else 0.0
        offsets = (means - means.mean()) * shrink * math.sqrt(s / (s - 1))
        seed_draws = offsets[rng.integers(0, s, (b, s))].mean(axis=1)
        reps += sign * (seed_draws + prompt_counts @ x.mean(axis=0) / n_prompts)
    se = float(reps.std(ddof=1))
    df = _components_df(a, r)
    half = t_quantile((1 + level) / 2, df) * se
    return Comparison(diff, diff - half, diff + half, _t_p(diff, se, df),
                      f"crossed bootstrap (B={b}; {len(a)} x {len(r)} seeds)", n_prompts, se, df)


def residual_variance(x) -> float:
    """σ²_res of a (seeds, prompts) table: the seed x prompt interaction mean square, SS / ((S-1)(P-1))."""
    x = np.asarray(x, float)
    s, p = x.shape
    if s < 2 or p < 2:
        return math.nan
    res = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    return float((res**2).sum() / ((s - 1) * (p - 1)))


def seed_variance(x) -> float:
    """σ²_seed of a (seeds, prompts) table: var(seed means) - σ²_res/P, floored at 0 (method of moments)."""
    x = np.asarray(x, float)
    return max(0.0, float(x.mean(axis=1).var(ddof=1)) - residual_variance(x) / x.shape[1])


def _components_df(a: np.ndarray, r: np.ndarray) -> float:
    """Welch-Satterthwaite df of SE² = σ²_seed,a/S_a + σ²_seed,r/S_r + var_prompt/P.

    σ²_seed = var(seed means) - σ²_res/P is estimated from the S - 1 df of the
    seed means, so its variance is that of var(m)/S (2 var(m)²/(S-1)/S²), not of
    a χ² on σ²_seed: the denominator uses var(m).  (Plugging σ²_seed in with S - 1
    df overstated df and under-covered, 92% at a seed SD of 3.5 points.)
    """
    ma, mr = a.mean(axis=1).var(ddof=1) / len(a), r.mean(axis=1).var(ddof=1) / len(r)
    prompt = (a.mean(axis=0) - r.mean(axis=0)).var(ddof=1) / a.shape[1]
    total = seed_variance(a) / len(a) + seed_variance(r) / len(r) + prompt
    denom = ma**2 / (len(a) - 1) + mr**2 / (len(r) - 1) + prompt**2 / (a.shape[1] - 1)
    return total**2 / denom if denom > 0 else math.inf


def paired_t_over_prompts(d) -> float:
    """Two-sided p of the paired t-test over prompts (mean(d) / (sd(d)/√n), n - 1 df); NaN when undefined."""
    d = np.asarray(d, float)
    if len(d) < 2:
        return math.nan
    return _t_p(float(d.mean()), float(d.std(ddof=1)) / math.sqrt(len(d)), len(d) - 1)


def benjamini_hochberg(pvalues) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate, 1995); NaN entries stay NaN, not counted.

    With the m valid p-values sorted ascending, the adjusted p_(i) = min_{j >= i} min(1, m · p_(j) / j).
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 1.0
    for rank in range(m, 0, -1):
        idx = order[rank - 1]
        running = min(running, m * p[idx] / rank)
        out[idx] = min(1.0, running)
    return out.tolist()


def tost(c: Comparison, margin: float) -> float:
    """Two one-sided tests (Schuirmann 1987) of |true difference| < ``margin``: p = max(p_low, p_high).

    p_low tests H0: diff <= -margin (t = (d + margin)/SE, upper tail), p_high tests
    H0: diff >= margin (t = (d - margin)/SE, lower tail), both with the comparison's
    SE and df.  Equivalence is claimed at level α when p < α, i.e. when the
    (1 - 2α) interval lies inside ±margin.  NaN when the SE is undefined.
    """
    if not c.se > 0 or not math.isfinite(c.se):
        return math.nan
    p_low = float(special.stdtr(c.df, -(c.diff + margin) / c.se))
    p_high = float(special.stdtr(c.df, (c.diff - margin) / c.se))
    return max(p_low, p_high)
