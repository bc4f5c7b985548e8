"""AlpacaEval's per-model v1 LC GLM with instruction difficulty (judges.stats.lc_v1)."""

import json
import warnings

import numpy as np
import pytest
from scipy.special import expit

from harness.errors import DataError
from judges.stats.annotations import score_annotation_files
from judges.stats.lc_v1 import fit_lc_v1, one_sided_share, read_instruction_difficulty


def _planted(rng, n, theta, phi, psi):
    delta = rng.normal(0, 300, n)
    d = rng.normal(0, 1.5, n)
    feature = np.tanh(delta / delta.std(ddof=1))
    y = (rng.random(n) < expit(theta + phi * feature + psi * d)).astype(float)
    return delta, d, y


def test_fit_matches_alpacaevals_duplicated_row_logistic_regression():
    """AlpacaEval fits soft labels by duplicating each row (label 1 with weight p, label 0 with weight
    1 - p) into sklearn's LogisticRegression without intercept.  sklearn's L2 objective
    ½|w|² + C·Σ weighted log-loss is ours (Σ log-loss + l2·|w|²) for C = 1/(2·l2): same optimum."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    delta, d, y = _planted(rng, 400, 0.3, 0.9, -0.7)
    soft = np.clip(y * 0.8 + 0.1 + rng.normal(0, 0.05, y.size), 0, 1)
    l2 = 0.5
    rate, params = fit_lc_v1(delta, d, soft, l2=l2)
    x = np.column_stack([np.ones_like(delta), np.tanh(delta / delta.std(ddof=1)), d])
    model = LogisticRegression(C=1 / (2 * l2), fit_intercept=False, tol=1e-12, max_iter=10_000)
    model.fit(np.vstack([x, x]), np.r_[np.ones(y.size), np.zeros(y.size)], sample_weight=np.r_[soft, 1 - soft])
    assert params == pytest.approx(model.coef_[0], abs=1e-5)
    assert rate == pytest.approx(float(np.mean(expit(model.coef_[0][0] + model.coef_[0][2] * d))), abs=1e-6)


def test_planted_coefficients_and_lc_are_recovered():
    """θ = 0.4, φ = 1.2, ψ = -0.8 on 40,000 rows, a negligible ridge: LC = mean σ(θ + ψ·d_i)."""
    rng = np.random.default_rng(1)
    delta, d, y = _planted(rng, 40_000, 0.4, 1.2, -0.8)
    rate, params = fit_lc_v1(delta, d, y, l2=1e-6)
    assert params == pytest.approx([0.4, 1.2, -0.8], abs=0.05)
    assert rate == pytest.approx(float(np.mean(expit(0.4 - 0.8 * d))), abs=0.01)


def test_ridge_pulls_toward_the_baseline():
    """A strong ridge shrinks every coefficient toward the baseline against itself: LC -> 0.5."""
    rng = np.random.default_rng(2)
    delta, d, y = _planted(rng, 200, 1.5, 0.5, 0.5)
    loose, _ = fit_lc_v1(delta, d, y, l2=1e-6)
    tight, _ = fit_lc_v1(delta, d, y, l2=1e6)
    assert loose > 0.7 and tight == pytest.approx(0.5, abs=1e-3)


def test_one_sided_share():
    assert one_sided_share([5, 3, -1, 0]) == pytest.approx(2 / 3)
    assert one_sided_share([-5, -3]) == 1.0 and one_sided_share([0, 0]) is None


def _rows(rng, generator, n, shorter):
    rows = []
    for i in range(n):
        base = int(rng.integers(200, 400))
        own = base - int(rng.integers(50, 150)) if shorter else base + int(rng.integers(-100, 100))
        rows.append({"instruction": f"q{i}", "output_1": "b" * base, "generator_1": "base",
                     "output_2": "g" * own, "generator_2": generator,
                     "preference": 1 + float(rng.random())})
    return rows


def test_annotations_with_a_difficulty_file_and_the_one_sided_warning(tmp_path):
    """lc_win_rate_v1 is fit_lc_v1 of the generator's rows with d from the file (row k -> index k);
    a model whose replies are all shorter gets the extrapolation warning; a missing index is an error."""
    rng = np.random.default_rng(3)
    rows = _rows(rng, "short", 60, shorter=True)
    path = tmp_path / "a.json"
    path.write_text(json.dumps(rows))
    difficulty = {k: float(rng.normal()) for k in range(60)}
    csv = tmp_path / "instruction_difficulty.csv"
    csv.write_text("index,instruction_difficulty\n" + "".join(f"{k},{v!r}\n" for k, v in difficulty.items()))
    assert read_instruction_difficulty(csv) == difficulty
    with pytest.warns(UserWarning, match="short: 100% of its length differences"):
        [row] = score_annotation_files([path], n_bootstrap=2, difficulty=read_instruction_difficulty(csv))
    deltas = [len(r["output_2"]) - len(r["output_1"]) for r in rows]
    expected, _ = fit_lc_v1(deltas, [difficulty[k] for k in range(60)], [r["preference"] - 1 for r in rows])
    assert row["lc_win_rate_v1"] == pytest.approx(100 * expected)
    assert row["length_one_sided"] == 100.0
    with pytest.raises(DataError, match="instruction index 59 .* no row in the instruction-difficulty file"):
        score_annotation_files([path], n_bootstrap=2, difficulty={k: 0.0 for k in range(59)})


def test_joint_difficulty_when_several_models_share_the_baseline(tmp_path):
    """Without a file, two generators sharing the baseline get d = the γ of the joint judges.stats.lc fit."""
    from judges.stats.lc import fit_lc, make_lc_data

    rng = np.random.default_rng(4)
    files = {g: _rows(rng, g, 50, shorter=False) for g in ("a", "b")}
    paths = []
    for g, rows in files.items():
        paths.append(tmp_path / f"{g}.json")
        paths[-1].write_text(json.dumps(rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mixed-sign lengths: no extrapolation warning
        result = score_annotation_files(paths, n_bootstrap=2)
    every = [r for rows in files.values() for r in rows]
    data = make_lc_data([r["generator_2"] for r in every], [r["instruction"] for r in every],
                        [len(r["output_2"]) - len(r["output_1"]) for r in every], [r["preference"] - 1 for r in every])
    gamma = dict(zip(data.instructions, fit_lc(data).gamma))
    for out in result:
        rows = files[out["generator"]]
        expected, _ = fit_lc_v1([len(r["output_2"]) - len(r["output_1"]) for r in rows],
                                [gamma[r["instruction"]] for r in rows], [r["preference"] - 1 for r in rows])
        assert out["lc_win_rate_v1"] == pytest.approx(100 * expected)


def test_difficulty_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "d.csv"
    bad.write_text("index,instruction_difficulty\n0,1.5\nx,2\n")
    with pytest.raises(DataError, match=r"d.csv:3: field 'index'"):
        read_instruction_difficulty(bad)
    bad.write_text("index,instruction_difficulty\n0,hard\n")
    with pytest.raises(DataError, match=r"d.csv:2: field 'instruction_difficulty'"):
        read_instruction_difficulty(bad)
