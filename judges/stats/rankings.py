"""Rankings of several models from judged pairs: Bradley–Terry, Elo scale, bootstrap CIs, win matrix.

Bradley–Terry (Bradley & Terry 1952): P(a beats b) = σ(s_a - s_b), s a log-strength per model.
A tie counts as half a win for each side: a comparison is a soft label y = score_a in {1, ½, 0}
(or any value in [0, 1]) and contributes y·log σ(z) + (1 - y)·log σ(-z), z = s_a - s_b.
Scores are fitted by maximum likelihood (L-BFGS, analytic gradient) and reported with mean 0.
A tiny ridge l2·Σs² (default 1e-3) keeps them finite when a model wins (or loses) every
comparison, where the plain MLE does not exist; on other data it moves scores by O(l2).

Elo scale: R = 1000 + (400 / ln 10)·(s - mean s), so that P(a beats b) = 1 / (1 + 10^((R_b - R_a)/400)),
the usual Elo logistic curve; ``elo_anchor=(model, rating)`` pins one model instead of the mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from judges.stats.winrate import OUTCOME_SCORE, PairVerdicts

ELO_SCALE = 400.0 / math.log(10.0)
ELO_MEAN = 1000.0


@dataclass(frozen=True)
class Comparison:
    """One judged pair: score_a = 1 if model_a won, 0.5 for a tie, 0 if model_b won.  ``prompt``
    names the prompt it was judged on (None: unknown), the cluster the bootstrap resamples."""

    model_a: str
    model_b: str
    score_a: float
    prompt: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_a <= 1.0:
            raise ValueError(f"Comparison.score_a must be in [0, 1], got {self.score_a!r}")
        if self.model_a == self.model_b:
            raise ValueError(f"a comparison needs two different models, got {self.model_a!r} twice")


def comparison_arrays(comparisons: Sequence[Comparison], models: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = {m: i for i, m in enumerate(models)}
    a = np.array([index[c.model_a] for c in comparisons], dtype=int)
    b = np.array([index[c.model_b] for c in comparisons], dtype=int)
    return a, b, np.array([c.score_a for c in comparisons], dtype=float)


def models_of(comparisons: Sequence[Comparison]) -> list[str]:
    """Model names in first-seen order."""
    return list(dict.fromkeys(m for c in comparisons for m in (c.model_a, c.model_b)))


def bt_objective(s: np.ndarray, a: np.ndarray, b: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """Σ [softplus(z) - y·z] + l2·Σs², z = s[a] - s[b]; gradient: ±(σ(z) - y) scattered, + 2·l2·s."""
    from scipy.special import expit
    z = s[a] - s[b]
    value = float(np.sum(np.logaddexp(0.0, z) - y * z) + l2 * s @ s)
    r = expit(z) - y
    n = s.size
    grad = np.bincount(a, r, n) - np.bincount(b, r, n) + 2.0 * l2 * s
    return value, grad


def bradley_terry(comparisons: Sequence[Comparison], *, l2: float = 1e-3,
                  models: list[str] | None = None) -> dict[str, float]:
    """Log-strengths s (mean 0) by penalized maximum likelihood; see the module docstring."""
    models = models_of(comparisons) if models is None else models
    if len(models) < 2:
        raise ValueError(f"Bradley-Terry needs comparisons between at least 2 models, got {models}")
    return dict(zip(models, _fit(*comparison_arrays(comparisons, models), len(models), l2).tolist()))


def _fit(a: np.ndarray, b: np.ndarray, y: np.ndarray, n_models: int, l2: float) -> np.ndarray:
    from scipy.optimize import minimize
    result = minimize(bt_objective, np.zeros(n_models), args=(a, b, y, l2), jac=True, method="L-BFGS-B",
                      options={"maxiter": 10_000, "gtol": 1e-10, "ftol": 1e-14})
    return result.x - result.x.mean()


def to_elo(scores: dict[str, float], elo_anchor: tuple[str, float] | None = None) -> dict[str, float]:
    """R = (400/ln 10)·s shifted so the mean is 1000, or so that elo_anchor's model has its rating."""
    if elo_anchor is None:
        offset = ELO_MEAN - ELO_SCALE * float(np.mean(list(scores.values())))
    else:
        model, rating = elo_anchor
        if model not in scores:
            raise ValueError(f"elo_anchor model {model!r} is not among the ranked models {sorted(scores)}")
        offset = rating - ELO_SCALE * scores[model]
    return {m: offset + ELO_SCALE * s for m, s in scores.items()}


@dataclass(frozen=True)
class Rating:
    """A model's score (log-strength or Elo) with a percentile bootstrap interval, and optionally
    its style-controlled score and interval (``judges.stats.style``) beside it."""

    model: str
    score: float
    ci_low: float
    ci_high: float
    style_score: float | None = None
    style_ci_low: float | None = None
    style_ci_high: float | None = None


def bootstrap_rows(comparisons: Sequence[Comparison], rng: np.random.Generator) -> np.ndarray:
    """Row indices of one bootstrap replicate.

    When every comparison names its prompt, the prompts are the clusters: P distinct prompts
    (first-seen order) are drawn with replacement, ``rng.integers(0, P, P)``, and each draw brings
    all the comparisons of its prompt (every generator is judged on the same prompts, so their
    verdicts on one prompt are correlated, and several samples of a prompt more so).  Otherwise the
    comparisons themselves are drawn, ``rng.integers(0, C, C)``."""
    if not comparisons or any(c.prompt is None for c in comparisons):
        return rng.integers(0, len(comparisons), len(comparisons))
    rows_of: dict[str, list[int]] = {}
    for i, c in enumerate(comparisons):
        rows_of.setdefault(c.prompt, []).append(i)
    groups = list(rows_of.values())
    draws = rng.integers(0, len(groups), len(groups))
    return np.concatenate([np.asarray(groups[d], dtype=int) for d in draws])


def bt_ratings(comparisons: Sequence[Comparison], *, n_bootstrap: int = 200, seed: int = 0,
               confidence: float = 0.95, elo: bool = False, elo_anchor: tuple[str, float] | None = None,
               l2: float = 1e-3) -> list[Rating]:
    """Bradley–Terry scores with percentile CIs from a bootstrap over prompts (``bootstrap_rows``:
    over comparisons when they do not name prompts), fixed seed, best first.  elo=True reports the
    Elo scale (each replicate mapped the same way).  A model absent from a replicate keeps the
    ridge's score there (0 before centring): with few comparisons per model, its interval is wide
    accordingly."""
    models = models_of(comparisons)

    def scale(s: dict[str, float]) -> dict[str, float]:
        return to_elo(s, elo_anchor) if elo else s

    point = scale(bradley_terry(comparisons, l2=l2, models=models))
    a, b, y = comparison_arrays(comparisons, models)
    rng = np.random.default_rng(seed)
    draws = np.empty((n_bootstrap, len(models)))
    for k in range(n_bootstrap):
        rows = bootstrap_rows(comparisons, rng)
        replicate = scale(dict(zip(models, _fit(a[rows], b[rows], y[rows], len(models), l2))))
        draws[k] = [replicate[m] for m in models]
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(draws, [tail, 100.0 - tail], axis=0)
    ratings = [Rating(m, point[m], float(low[i]), float(high[i])) for i, m in enumerate(models)]
    return sorted(ratings, key=lambda r: -r.score)


def win_rate_matrix(comparisons: Sequence[Comparison]) -> dict[str, dict[str, float | None]]:
    """matrix[a][b] = mean score of a against b over their direct comparisons (either side listed
    first; ties ½), None on the diagonal and for pairs never compared."""
    models = models_of(comparisons)
    totals = {(x, y): [0.0, 0] for x in models for y in models}
    for c in comparisons:
        totals[(c.model_a, c.model_b)][0] += c.score_a
        totals[(c.model_b, c.model_a)][0] += 1.0 - c.score_a
        totals[(c.model_a, c.model_b)][1] += 1
        totals[(c.model_b, c.model_a)][1] += 1
    return {x: {y: (totals[(x, y)][0] / totals[(x, y)][1] if totals[(x, y)][1] else None) for y in models}
            for x in models}


def comparisons_from_pairs(candidate: str, baseline: str, pairs: Sequence[PairVerdicts],
                           prompts: Sequence[str] | None = None) -> list[Comparison]:
    """A pairwise run's prompts as comparisons (win 1, tie ½, loss 0, as in judges.stats.winrate),
    each naming its prompt when ``prompts`` (one per pair) is given.  Error prompts carry no
    outcome and are left out here; summarize_pairs counts them."""
    names = [None] * len(pairs) if prompts is None else list(prompts)
    return [Comparison(candidate, baseline, OUTCOME_SCORE[p.outcome], name)
            for p, name in zip(pairs, names) if not p.is_error]
