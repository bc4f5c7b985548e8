"""AlpacaEval's ``length_controlled_v1`` GLM, per model, with instruction difficulty (Dubois et al. 2024).

``judges.stats.lc`` fits σ(θ_m + φ_m·tanh(Δ/sd_m) + γ_i) jointly; one model alone gets no γ,
which is AlpacaEval's ``length_controlled_minimal`` and lands far from the published LC for models
much shorter or longer than the baseline.  AlpacaEval's leaderboard GLM (``length_controlled_v1``,
``alpaca_eval/metrics/glm_winrate.py``) is fitted per model on

    P(model preferred on instruction i) = σ(θ + φ·tanh(Δ_r / sd) + ψ·d_i)

* d_i: the instruction's difficulty, a fixed covariate: AlpacaEval's published
  ``instruction_difficulty`` column (read from a user's CSV, instruction index -> difficulty), or,
  when several models share the baseline, the γ_i of the joint fit of ``judges.stats.lc``;
* Δ = model length - baseline length, sd its std (ddof 1) over the model's rows;
* soft labels y in [0, 1]; objective Σ_r [softplus(z) - y·z] + l2·(θ² + φ² + ψ²).  The ridge pulls
  the fit toward the baseline against itself (θ = φ = ψ = 0: 0.5 on every instruction).
  AlpacaEval regularizes toward the baseline with extra rows of the baseline against its own
  verbose/concise variants (weight 0.2) and an L1 penalty chosen by 5-fold CV; those rows are not
  public per instruction, so this is the ridge stand-in (``L2_TO_BASELINE``, per row count);
* LC = 100 · mean_i σ(θ + ψ·d_i): the predicted win rate with the length term set to 0.

When almost all of a model's Δ have one sign (``ONE_SIDED``: 95%), Δ = 0 lies outside its data and
the LC is an extrapolation of the fitted length curve: ``one_sided_share`` reports the share.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.errors import DataError

L2_TO_BASELINE = 1.0
ONE_SIDED = 0.95


def v1_objective(params: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """Σ softplus(z) - y·z + l2·|params|², z = x·params; x (R, 3) = [1, tanh(Δ/sd), d]."""
    from scipy.special import expit
    z = x @ params
    value = float(np.sum(np.logaddexp(0.0, z) - y * z) + l2 * params @ params)
    return value, x.T @ (expit(z) - y) + 2.0 * l2 * params


def fit_lc_v1(length_delta: Sequence[float], difficulty: Sequence[float], labels: Sequence[float], *,
              l2: float = L2_TO_BASELINE) -> tuple[float, np.ndarray]:
    """One model's v1 fit: (LC win rate as a fraction, params [θ, φ, ψ]).

    ``difficulty`` is d of each row's instruction (zeros: no difficulty term, then ψ stays 0)."""
    from scipy.optimize import minimize
    from scipy.special import expit
    delta = np.asarray(length_delta, dtype=float)
    d = np.asarray(difficulty, dtype=float)
    y = np.asarray(labels, dtype=float)
    sd = delta.std(ddof=1) if delta.size > 1 else 0.0
    feature = np.tanh(delta / sd) if sd > 0 else np.zeros_like(delta)
    x = np.column_stack([np.ones_like(delta), feature, d])
    result = minimize(v1_objective, np.zeros(3), args=(x, y, l2), jac=True, method="L-BFGS-B",
                      options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-14})
    theta, _, psi = result.x
    return float(np.mean(expit(theta + psi * d))), result.x


def one_sided_share(length_delta: Sequence[float]) -> float | None:
    """The share of nonzero Δ with the majority sign (1.0: every reply longer, or every one shorter)."""
    delta = np.asarray(length_delta, dtype=float)
    nonzero = delta[delta != 0]
    if nonzero.size == 0:
        return None
    longer = float(np.mean(nonzero > 0))
    return max(longer, 1.0 - longer)


def read_instruction_difficulty(path: str | Path) -> dict[int, float]:
    """AlpacaEval's ``instruction_difficulty.csv``: a header, then rows ``index,instruction_difficulty``
    (instruction index, an integer, -> difficulty, a number).  Errors name the file, line and field."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: instruction-difficulty file not found")
    out: dict[int, float] = {}
    with file.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise DataError(f"{file}: empty; expected a header and rows 'index,instruction_difficulty'")
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 2:
            raise DataError(f"{file}:{number}: expected 'index,instruction_difficulty', got {row!r}")
        try:
            index = int(row[0])
        except ValueError:
            raise DataError(f"{file}:{number}: field 'index': expected an integer, got {row[0]!r}") from None
        try:
            value = float(row[-1])
        except ValueError:
            raise DataError(f"{file}:{number}: field 'instruction_difficulty': expected a number, "
                            f"got {row[-1]!r}") from None
        if not math.isfinite(value):
            raise DataError(f"{file}:{number}: field 'instruction_difficulty': not finite ({row[-1]!r})")
        out[index] = value
    return out
