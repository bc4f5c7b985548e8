"""Style-controlled Bradley–Terry: arena-hard's / Chatbot Arena's style control (Li et al. 2024,
"Does style matter? Disentangling style and substance in Chatbot Arena").

A comparison of a against b on one prompt gets style covariates x (F,) and

    P(a beats b) = σ(s_a - s_b + β·x)

fitted by maximum likelihood on soft labels (ties ½, as ``judges.stats.rankings``), so a model's
strength s is what remains once the judge's taste for length and markdown is accounted for.  The
covariates follow arena-hard-auto: for each feature k (reply length, markdown headers, bold spans,
list items), the normalized difference (f_a - f_b) / (f_a + f_b) (0 when both are 0), then
standardized over the comparisons (mean 0, std 1; a constant column is left at 0).  Code blocks are
removed before the markdown counts.  β is reported per feature: β_length > 0 means the judge favours
the longer reply at equal strength.  The same tiny ridge as plain BT (l2·Σs²) keeps s finite; β is
not penalized.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from judges.stats.rankings import Comparison, bootstrap_rows, comparison_arrays, models_of, to_elo

STYLE_FEATURES = ("length", "headers", "bold", "lists")
_CODE = re.compile(r"```.*?```", re.DOTALL)
_HEADER = re.compile(r"^#{1,6}\s", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")
_LIST = re.compile(r"^\s*(?:[-*+]|\d+\.)\s", re.MULTILINE)


def style_counts(text: str, length: Callable[[str], float] = len) -> dict[str, float]:
    """The style features of one reply: its length (``length``, characters by default) and its
    markdown headers, bold spans and list items (ordered or not), code blocks left out."""
    prose = _CODE.sub("", text)
    return {"length": float(length(text)), "headers": float(len(_HEADER.findall(prose))),
            "bold": float(len(_BOLD.findall(prose))), "lists": float(len(_LIST.findall(prose)))}


def style_covariates(counts_a: Sequence[dict], counts_b: Sequence[dict],
                     features: Sequence[str] = STYLE_FEATURES) -> np.ndarray:
    """(C, F) covariates: per feature (a - b) / (a + b) (0 when a + b = 0), standardized per column."""
    a = np.array([[c[f] for f in features] for c in counts_a], dtype=float).reshape(-1, len(features))
    b = np.array([[c[f] for f in features] for c in counts_b], dtype=float).reshape(-1, len(features))
    total = a + b
    diff = np.divide(a - b, total, out=np.zeros_like(total), where=total > 0)
    return standardize(diff)


def standardize(x: np.ndarray) -> np.ndarray:
    """Columns to mean 0 and std 1 (ddof 0, as arena-hard); constant columns become 0."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    return np.divide(x - mean, std, out=np.zeros_like(x), where=std > 0)


def style_objective(params: np.ndarray, a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray,
                    n_models: int, l2: float) -> tuple[float, np.ndarray]:
    """Σ [softplus(z) - y·z] + l2·Σs², z = s[a] - s[b] + x·β, params = [s (M), β (F)]; and its gradient."""
    from scipy.special import expit
    s, beta = params[:n_models], params[n_models:]
    z = s[a] - s[b] + x @ beta
    value = float(np.sum(np.logaddexp(0.0, z) - y * z) + l2 * s @ s)
    r = expit(z) - y
    grad_s = np.bincount(a, r, n_models) - np.bincount(b, r, n_models) + 2.0 * l2 * s
    return value, np.concatenate([grad_s, x.T @ r])


def _fit(a, b, x, y, n_models: int, l2: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import minimize
    x0 = np.zeros(n_models + x.shape[1])
    result = minimize(style_objective, x0, args=(a, b, x, y, n_models, l2), jac=True, method="L-BFGS-B",
                      options={"maxiter": 10_000, "gtol": 1e-10, "ftol": 1e-14})
    s = result.x[:n_models]
    return s - s.mean(), result.x[n_models:]


@dataclass(frozen=True)
class StyleFit:
    """Style-controlled strengths (log scale, mean 0, or Elo), β per feature, and percentile CIs."""

    scores: dict[str, float]
    ci: dict[str, tuple[float, float]]
    coefficients: dict[str, float]
    coefficient_ci: dict[str, tuple[float, float]]


def style_controlled_bt(comparisons: Sequence[Comparison], covariates: np.ndarray, *,
                        features: Sequence[str] = STYLE_FEATURES, n_bootstrap: int = 200, seed: int = 0,
                        confidence: float = 0.95, elo: bool = False, l2: float = 1e-3) -> StyleFit:
    """Fit P(a beats b) = σ(s_a - s_b + β·x) (module docstring); CIs from the prompt bootstrap of
    ``judges.stats.rankings.bootstrap_rows`` (covariates kept as computed on the full data).
    ``covariates`` is (C, F), one row per comparison; elo=True maps s to the Elo scale."""
    x = np.asarray(covariates, dtype=float).reshape(len(comparisons), len(features))
    models = models_of(comparisons)
    a, b, y = comparison_arrays(comparisons, models)

    def scale(s: np.ndarray) -> np.ndarray:
        return np.array([to_elo(dict(zip(models, s)))[m] for m in models]) if elo else s

    s, beta = _fit(a, b, x, y, len(models), l2)
    rng = np.random.default_rng(seed)
    draws_s, draws_beta = np.empty((n_bootstrap, len(models))), np.empty((n_bootstrap, len(features)))
    for k in range(n_bootstrap):
        rows = bootstrap_rows(comparisons, rng)
        rs, rb = _fit(a[rows], b[rows], x[rows], y[rows], len(models), l2)
        draws_s[k], draws_beta[k] = scale(rs), rb
    tail = 100.0 * (1.0 - confidence) / 2.0
    low_s, high_s = np.percentile(draws_s, [tail, 100 - tail], axis=0)
    low_b, high_b = np.percentile(draws_beta, [tail, 100 - tail], axis=0)
    point = scale(s)
    return StyleFit({m: float(point[i]) for i, m in enumerate(models)},
                    {m: (float(low_s[i]), float(high_s[i])) for i, m in enumerate(models)},
                    {f: float(beta[j]) for j, f in enumerate(features)},
                    {f: (float(low_b[j]), float(high_b[j])) for j, f in enumerate(features)})

