"""Length-controlled win rate: the GLM of Dubois et al. 2024 (arXiv 2404.04475), per DESIGN.md.

For a row r (one instruction i, one model m, compared with the shared baseline):

    P(model preferred) = σ(θ_m + φ_m · tanh(Δ_r / sd_m) + γ_i)

* Δ = model length - baseline length (chars by default; the caller passes lengths in its unit);
* sd_m = the sample standard deviation (ddof = 1, as pandas' ``std``) of Δ over model m's rows;
  when it is 0 or undefined (one row) the length term is 0 for that model (φ_m unidentified);
* soft labels y_r in [0, 1] (AlpacaEval's preference - 1);
* objective = Σ_r [log(1 + e^z) - y z]  +  0.01 · Σ_i γ_i²   (θ, φ unpenalized);
  a single model is fitted without γ;
* LC win rate_m = mean over model m's instructions of σ(θ_m + γ_i): the predicted preference
  with the length difference set to 0.  Its standard error is the std (ddof = 1) over a bootstrap
  that resamples instructions with replacement (all their rows, for every model) and refits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# scipy is imported inside the functions that use it: commands that never fit a model skip its start-up cost.

GAMMA_PENALTY = 0.01


@dataclass(frozen=True)
class LCData:
    """Rows of the GLM as aligned arrays of length R (indices into ``models`` / ``instructions``)."""

    models: list[str]
    instructions: list[str]
    model_index: np.ndarray        # (R,) int
    instruction_index: np.ndarray  # (R,) int
    length_delta: np.ndarray       # (R,) float, Δ = model length - baseline length
    label: np.ndarray              # (R,) float in [0, 1], 1 = model preferred


def make_lc_data(models: Sequence[str], instructions: Sequence[str], length_deltas: Sequence[float],
                 labels: Sequence[float]) -> LCData:
    """Index per-row names into arrays; names keep first-seen order.  Labels must lie in [0, 1]."""
    sizes = {len(models), len(instructions), len(length_deltas), len(labels)}
    if len(sizes) != 1:
        raise ValueError(f"LC rows need equal-length columns, got models={len(models)}, "
                         f"instructions={len(instructions)}, deltas={len(length_deltas)}, labels={len(labels)}")
    label = np.asarray(labels, dtype=float)
    bad = np.flatnonzero(~((label >= 0.0) & (label <= 1.0)))
    if bad.size:
        raise ValueError(f"LC labels must be in [0, 1]; row {bad[0]} has {float(label[bad[0]])!r}")
    model_names, model_index = _index(models)
    instruction_names, instruction_index = _index(instructions)
    return LCData(model_names, instruction_names, model_index, instruction_index,
                  np.asarray(length_deltas, dtype=float), label)


def _index(names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    positions: dict[str, int] = {}
    index = np.array([positions.setdefault(name, len(positions)) for name in names], dtype=int)
    return list(positions), index


def length_feature(model_index: np.ndarray, length_delta: np.ndarray, n_models: int) -> tuple[np.ndarray, np.ndarray]:
    """tanh(Δ / sd_m) per row and sd_m per model (ddof = 1; feature 0 where sd_m is 0 or undefined)."""
    sd = np.zeros(n_models)
    for m in range(n_models):
        deltas = length_delta[model_index == m]
        sd[m] = deltas.std(ddof=1) if deltas.size > 1 else 0.0
    row_sd = sd[model_index]
    scaled = np.divide(length_delta, row_sd, out=np.zeros_like(length_delta), where=row_sd > 0)
    return np.tanh(scaled), sd


def glm_objective(params: np.ndarray, data: LCData, feature: np.ndarray, use_gamma: bool,
                  penalty: float = GAMMA_PENALTY) -> tuple[float, np.ndarray]:
    """Penalized soft-label NLL and its gradient.  params = [θ (M), φ (M), γ (I) if use_gamma].

    z = θ[m] + φ[m]·f + γ[i];  NLL = Σ softplus(z) - y·z;  dNLL/dz = σ(z) - y;
    penalty · Σγ² adds 2·penalty·γ to the γ gradient.
    """
    from scipy.special import expit
    n_models, n_instr = len(data.models), len(data.instructions)
    theta, phi = params[:n_models], params[n_models:2 * n_models]
    z = theta[data.model_index] + phi[data.model_index] * feature
    if use_gamma:
        gamma = params[2 * n_models:]
        z = z + gamma[data.instruction_index]
    value = float(np.sum(np.logaddexp(0.0, z) - data.label * z))
    residual = expit(z) - data.label
    grad = [np.bincount(data.model_index, residual, n_models),
            np.bincount(data.model_index, residual * feature, n_models)]
    if use_gamma:
        value += penalty * float(gamma @ gamma)
        grad.append(np.bincount(data.instruction_index, residual, n_instr) + 2.0 * penalty * gamma)
    return value, np.concatenate(grad)


@dataclass(frozen=True)
class LCFit:
    """Fitted GLM: per-model θ, φ, sd and LC win rate (fractions); γ per instruction (zeros without γ)."""

    models: list[str]
    theta: np.ndarray
    phi: np.ndarray
    sd: np.ndarray
    gamma: np.ndarray
    lc_win_rate: np.ndarray
    use_gamma: bool
    converged: bool


def fit_lc(data: LCData, *, use_gamma: bool | None = None, penalty: float = GAMMA_PENALTY,
           start: np.ndarray | None = None) -> LCFit:
    """Maximum (penalized) likelihood by L-BFGS with the analytic gradient.

    use_gamma defaults to "more than one model" (DESIGN.md: a single model is fitted without γ).
    A model preferred on every one of its rows (or on none) has no finite MLE: θ runs off until
    L-BFGS stops, and its LC win rate comes out at the limit, 1 (or 0).
    """
    from scipy.optimize import minimize
    n_models, n_instr = len(data.models), len(data.instructions)
    if n_models == 0:
        raise ValueError("fit_lc needs at least one row")
    use_gamma = n_models > 1 if use_gamma is None else use_gamma
    feature, sd = length_feature(data.model_index, data.length_delta, n_models)
    scale = _diagonal_scale(data, feature, use_gamma, penalty)
    x0 = np.zeros(scale.size) if start is None else start

    def scaled(u: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = glm_objective(u / scale, data, feature, use_gamma, penalty)
        return value, grad / scale

    result = minimize(scaled, x0 * scale, jac=True, method="L-BFGS-B",
                      options={"maxiter": 5000, "gtol": 1e-9, "ftol": 1e-13})
    params = result.x / scale
    theta, phi = params[:n_models], params[n_models:2 * n_models]
    gamma = params[2 * n_models:] if use_gamma else np.zeros(n_instr)
    return LCFit(data.models, theta, phi, sd, gamma, _lc_rates(data, theta, gamma), use_gamma,
                 bool(result.success))


def _diagonal_scale(data: LCData, feature: np.ndarray, use_gamma: bool, penalty: float) -> np.ndarray:
    """sqrt of the Hessian's diagonal at z = 0 (σ' = 1/4): L-BFGS runs on params · scale.

    θ has ~R_m rows of curvature, γ only a few: unscaled, L-BFGS needs several times more steps.
    Zero-curvature entries (a length term that is identically 0) get scale 1.
    """
    n_models, n_instr = len(data.models), len(data.instructions)
    diag = [0.25 * np.bincount(data.model_index, minlength=n_models),
            0.25 * np.bincount(data.model_index, feature**2, n_models)]
    if use_gamma:
        diag.append(0.25 * np.bincount(data.instruction_index, minlength=n_instr) + 2.0 * penalty)
    scale = np.sqrt(np.concatenate(diag))
    return np.where(scale > 0, scale, 1.0)


def _lc_rates(data: LCData, theta: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """LC win rate_m = mean over m's distinct instructions of σ(θ_m + γ_i)."""
    from scipy.special import expit
    rates = np.empty(len(data.models))
    for m in range(len(data.models)):
        instructions = np.unique(data.instruction_index[data.model_index == m])
        rates[m] = float(np.mean(expit(theta[m] + gamma[instructions])))
    return rates


@dataclass(frozen=True)
class LCResult:
    """One model's LC win rate (fraction) with its bootstrap standard error (None when B < 2)."""

    model: str
    lc_win_rate: float
    lc_standard_error: float | None
    theta: float
    phi: float
    sd: float


def lc_win_rates(data: LCData, *, n_bootstrap: int = 200, seed: int = 0,
                 use_gamma: bool | None = None) -> dict[str, LCResult]:
    """Fit jointly over every model in ``data`` (they share one baseline), then bootstrap the SE."""
    fit = fit_lc(data, use_gamma=use_gamma)
    replicates = bootstrap_lc(data, fit, n_bootstrap=n_bootstrap, seed=seed)
    results = {}
    for m, model in enumerate(data.models):
        values = replicates[:, m][~np.isnan(replicates[:, m])]
        se = float(values.std(ddof=1)) if values.size > 1 else None
        results[model] = LCResult(model, float(fit.lc_win_rate[m]), se, float(fit.theta[m]),
                                  float(fit.phi[m]), float(fit.sd[m]))
    return results


def bootstrap_lc(data: LCData, full: LCFit, *, n_bootstrap: int, seed: int) -> np.ndarray:
    """(B, M) LC win rates refitted on instruction-resampled data; NaN where a model had no rows.

    ``full`` is the fit on ``data``: replicates use its use_gamma and start from its parameters.

    Each draw of an instruction is its own cluster (a repeated draw gets a fresh γ), the usual
    cluster bootstrap; sd_m is recomputed per replicate since it is part of the estimator.
    """
    rng = np.random.default_rng(seed)
    n_models, n_instr = len(data.models), len(data.instructions)
    use_gamma = full.use_gamma
    rows_of = [np.flatnonzero(data.instruction_index == i) for i in range(n_instr)]
    out = np.full((n_bootstrap, n_models), np.nan)
    for b in range(n_bootstrap):
        draws = rng.integers(0, n_instr, size=n_instr)
        rows = np.concatenate([rows_of[i] for i in draws])
        cluster = np.repeat(np.arange(n_instr), [rows_of[i].size for i in draws])
        present = np.unique(data.model_index[rows])
        remap = np.full(n_models, -1)
        remap[present] = np.arange(present.size)
        sample = LCData([data.models[m] for m in present], [str(k) for k in range(n_instr)],
                        remap[data.model_index[rows]], cluster, data.length_delta[rows], data.label[rows])
        # Warm start from the full fit: each cluster starts at its instruction's γ.
        start = np.concatenate([full.theta[present], full.phi[present]] + ([full.gamma[draws]] if use_gamma else []))
        out[b, present] = fit_lc(sample, use_gamma=use_gamma, start=start).lc_win_rate
    return out
