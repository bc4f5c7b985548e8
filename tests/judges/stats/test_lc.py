"""The LC GLM (DESIGN.md "LC GLM"): checked against an independent Newton fit and planted truths."""

import numpy as np
import pytest
from scipy.optimize import check_grad
from scipy.special import expit

from judges.stats.lc import fit_lc, glm_objective, lc_win_rates, length_feature, make_lc_data


def _random_data(rng, n_models=3, n_instr=6, missing=0.2):
    rows = [(f"m{m}", f"i{i}") for m in range(n_models) for i in range(n_instr) if rng.random() > missing]
    models, instructions = zip(*rows)
    return make_lc_data(models, instructions, rng.normal(50, 300, len(rows)), rng.random(len(rows)))


def _newton_fit(data, use_gamma, penalty=0.01, iters=60):
    """Independent fit: a dense design matrix X (θ one-hot | φ one-hot · tanh(Δ/sd) | γ one-hot), the
    feature recomputed here from per-model numpy std (ddof=1), and Newton steps
    β ← β - H⁻¹ g with g = Xᵀ(p - y) + 2·pen·γ and H = Xᵀ diag(p(1-p)) X + 2·pen·I_γ."""
    m_idx, i_idx = data.model_index, data.instruction_index
    n_m, n_i, n_r = len(data.models), len(data.instructions), len(data.label)
    sd = np.array([np.std(data.length_delta[m_idx == m], ddof=1) for m in range(n_m)])
    f = np.tanh(data.length_delta / sd[m_idx])
    onehot_m = np.eye(n_m)[m_idx]
    blocks = [onehot_m, onehot_m * f[:, None]] + ([np.eye(n_i)[i_idx]] if use_gamma else [])
    x = np.hstack(blocks)
    ridge = np.zeros(x.shape[1])
    if use_gamma:
        ridge[2 * n_m:] = 2 * penalty
    beta = np.zeros(x.shape[1])
    for _ in range(iters):
        p = expit(x @ beta)
        grad = x.T @ (p - data.label) + ridge * beta
        hess = x.T @ (x * (p * (1 - p))[:, None]) + np.diag(ridge)
        beta -= np.linalg.solve(hess, grad)
    assert n_r == x.shape[0]
    return beta


def test_gradient_is_analytic_derivative():
    data = _random_data(np.random.default_rng(0))
    feature, _ = length_feature(data.model_index, data.length_delta, len(data.models))
    x0 = np.random.default_rng(1).normal(size=2 * len(data.models) + len(data.instructions))
    err = check_grad(lambda p: glm_objective(p, data, feature, True)[0],
                     lambda p: glm_objective(p, data, feature, True)[1], x0)
    assert err < 1e-5


@pytest.mark.parametrize("use_gamma", [True, False])
def test_fit_matches_independent_newton(use_gamma):
    data = _random_data(np.random.default_rng(3))
    fit = fit_lc(data, use_gamma=use_gamma)
    beta = _newton_fit(data, use_gamma)
    n_m = len(data.models)
    assert fit.converged
    np.testing.assert_allclose(fit.theta, beta[:n_m], atol=1e-5)
    np.testing.assert_allclose(fit.phi, beta[n_m:2 * n_m], atol=1e-5)
    gamma = beta[2 * n_m:] if use_gamma else np.zeros(len(data.instructions))
    np.testing.assert_allclose(fit.gamma, gamma, atol=1e-5)
    # LC win rate of model 0 from the Newton parameters, over its own instructions.
    own = np.unique(data.instruction_index[data.model_index == 0])
    assert fit.lc_win_rate[0] == pytest.approx(np.mean(expit(beta[0] + gamma[own])), abs=1e-6)


def test_single_model_without_length_difference_is_the_raw_mean():
    """Δ ≡ 0 and no γ: the MLE of σ(θ) on soft labels is their mean, so LC = raw = 0.65."""
    labels = [1.0, 0.0, 0.5, 1.0, 0.75, 0.65]
    data = make_lc_data(["m"] * 6, [f"i{k}" for k in range(6)], [0.0] * 6, labels)
    result = lc_win_rates(data, n_bootstrap=20)["m"]
    assert result.lc_win_rate == pytest.approx(np.mean(labels), abs=1e-6)
    assert result.sd == 0.0 and result.phi == 0.0 and result.lc_standard_error > 0
    # The bootstrap is seeded: the same seed gives the same SE, another seed another one.
    assert lc_win_rates(data, n_bootstrap=20)["m"] == result
    assert lc_win_rates(data, n_bootstrap=20, seed=1)["m"].lc_standard_error != result.lc_standard_error


def test_preference_only_from_length_gives_lc_near_half():
    """The judge sees only length: y ~ Bernoulli(σ(1.5·tanh(Δ/200))) with the model ~150 chars longer
    on average.  Raw win rate ≈ 0.68; LC (length difference set to 0) ≈ 0.5 within 4 bootstrap SEs."""
    rng = np.random.default_rng(4)
    n = 1500
    delta = rng.normal(150, 200, n)
    y = (rng.random(n) < expit(1.5 * np.tanh(delta / 200))).astype(float)
    data = make_lc_data(["m"] * n, [f"i{k}" for k in range(n)], delta, y)
    result = lc_win_rates(data, n_bootstrap=40, seed=0)["m"]
    raw = y.mean()
    se = result.lc_standard_error
    assert 0.0 < se < 0.03
    assert abs(result.lc_win_rate - 0.5) < 4 * se
    assert raw - 0.5 > 0.12


def _planted(rng, thetas, n_instr, phi=1.0, annotators=8, pad=None):
    """Models share instructions with difficulties γ ~ N(0, 1); soft label = mean of `annotators`
    Bernoulli draws of σ(θ_m + φ·tanh(Δ/200) + γ_i).  Δ ~ N(0, 200) independently per row, or, with
    `pad`, one shared Δ per instruction plus pad[m] chars (the same answers, padded)."""
    gamma = rng.normal(0, 1, n_instr)
    base_delta = rng.normal(0, 200, n_instr)
    models, instructions, deltas, labels = [], [], [], []
    for m, theta in enumerate(thetas):
        delta = base_delta + pad[m] if pad else rng.normal(0, 200, n_instr)
        p = expit(theta + phi * np.tanh(delta / 200) + gamma)
        labels += list(rng.binomial(annotators, p) / annotators)
        models += [f"m{m}"] * n_instr
        instructions += [f"i{i}" for i in range(n_instr)]
        deltas += list(delta)
    return make_lc_data(models, instructions, deltas, labels), gamma


def test_planted_instruction_difficulties_and_strengths_are_recovered():
    thetas = np.linspace(-1.0, 1.0, 6)
    data, gamma = _planted(np.random.default_rng(5), thetas, n_instr=150)
    fit = fit_lc(data)
    assert fit.converged
    assert np.corrcoef(fit.gamma, gamma)[0, 1] > 0.85
    assert np.mean(np.abs(fit.gamma - gamma)) < 0.4
    # θ is identified only up to the shift shared with γ (their mean); compare centred values.
    np.testing.assert_allclose(fit.theta - fit.theta.mean(), thetas - thetas.mean(), atol=0.2)
    np.testing.assert_allclose(fit.phi, 1.0, atol=0.35)


def test_padding_raises_raw_win_rate_but_not_lc():
    """Two models of equal quality (θ = 0.3) with a length-loving judge (φ = 1); "m1" is "m0" with
    every answer padded by 200 chars.  Raw rates differ by > 0.1; LC rates agree within 4 SEs."""
    data, _ = _planted(np.random.default_rng(6), [0.3, 0.3], n_instr=600, pad=[0.0, 200.0])
    results = lc_win_rates(data, n_bootstrap=30, seed=1)
    raw = [data.label[data.model_index == m].mean() for m in (0, 1)]
    assert raw[1] - raw[0] > 0.1
    lc0, lc1 = results["m0"], results["m1"]
    se = np.hypot(lc0.lc_standard_error, lc1.lc_standard_error)
    assert abs(lc1.lc_win_rate - lc0.lc_win_rate) < 4 * se
    assert se < 0.05


def test_bad_labels_and_ragged_columns_are_rejected():
    with pytest.raises(ValueError, match=r"row 1 has 1\.5"):
        make_lc_data(["m", "m"], ["a", "b"], [0, 0], [0.5, 1.5])
    with pytest.raises(ValueError, match="equal-length"):
        make_lc_data(["m"], ["a", "b"], [0], [0.5])
