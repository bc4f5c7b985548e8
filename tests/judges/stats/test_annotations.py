"""Re-scoring AlpacaEval annotation files (DESIGN.md "Annotations"): hand numbers, pandas, errors."""

import json

import numpy as np
import pandas as pd
import pytest

from harness.errors import DataError, HarnessError
from judges.stats.annotations import preference_label, score_annotation_files
from judges.stats.lc import lc_win_rates, make_lc_data

KEYS = ["generator", "n", "errors", "win_rate", "standard_error", "lc_win_rate", "lc_standard_error", "avg_length",
        "lc_win_rate_v1", "length_one_sided"]


def _row(instruction, out1, out2, preference, generator="m", baseline="base"):
    return {"instruction": instruction, "output_1": out1, "generator_1": baseline,
            "output_2": out2, "generator_2": generator, "preference": preference}


def _write(path, rows):
    path.write_text(json.dumps(rows))
    return path


def test_preference_labels():
    assert [preference_label(v) for v in (2, 1, 1.5, 0, 1.73, 2.0)] == [1.0, 0.0, 0.5, 0.5, pytest.approx(0.73), 1.0]
    assert [preference_label(v) for v in (None, float("nan"), 3, 0.5, -1, "2", True)] == [None] * 7


def test_hand_computed_file(tmp_path):
    """Preferences 2, 1, 1.5, 0 are valid (labels 1, 0, .5, .5); null and 3 are errors.
    n = 6, errors = 2, win_rate = 100 · 2/4 = 50; s² = (.25 + .25) / 3 = 1/6, SE = 100 · sqrt(1/24).
    Equal lengths (Δ = 0) and one model: the LC GLM reduces to the soft-label mean, 50."""
    prefs = [2, 1, 1.5, 0, None, 3]
    path = _write(tmp_path / "a.json", [_row(f"q{i}", "xx", "yy", p) for i, p in enumerate(prefs)])
    [row] = score_annotation_files([path], n_bootstrap=20)
    assert list(row) == KEYS
    assert (row["generator"], row["n"], row["errors"]) == ("m", 6, 2)
    assert row["win_rate"] == pytest.approx(50.0)
    assert row["standard_error"] == pytest.approx(100 * np.sqrt(1 / 24))
    assert row["lc_win_rate"] == pytest.approx(50.0, abs=1e-4)
    assert row["lc_standard_error"] > 0


def _random_rows(rng, generator, n, bias):
    rows = []
    for i in range(n):
        out1 = "b" * int(rng.integers(20, 400))
        out2 = "g" * int(rng.integers(20, 600))
        pref = float(rng.choice([1, 2, 1.5, 0])) if rng.random() < 0.5 else 1 + float(rng.random() ** bias)
        rows.append(_row(f"instruction {i}", out1, out2, pref if rng.random() > 0.05 else None, generator))
    return rows


def test_two_files_sharing_a_baseline_match_pandas_and_a_joint_fit(tmp_path):
    """Win rate / SE as AlpacaEval computes them with pandas ((pref - 1).mean(), .sem(), ties at 1.5);
    LC equal to a joint judges.stats.lc fit over both generators built here from the raw rows."""
    rng = np.random.default_rng(0)
    files = {g: _random_rows(rng, g, 80, bias) for g, bias in (("gen_a", 0.5), ("gen_b", 2.0))}
    paths = [_write(tmp_path / f"{g}.json", rows) for g, rows in files.items()]
    result = score_annotation_files(paths, n_bootstrap=25, seed=3)
    assert [r["generator"] for r in result] == ["gen_a", "gen_b"]
    all_rows = [r for rows in files.values() for r in rows]
    valid = [r for r in all_rows if r["preference"] is not None]
    joint = lc_win_rates(make_lc_data([r["generator_2"] for r in valid], [r["instruction"] for r in valid],
                                      [len(r["output_2"]) - len(r["output_1"]) for r in valid],
                                      [(1.5 if r["preference"] == 0 else r["preference"]) - 1 for r in valid]),
                         n_bootstrap=25, seed=3)
    for out in result:
        prefs = pd.Series([r["preference"] for r in files[out["generator"]]], dtype=float)
        soft = prefs.dropna().replace(0, 1.5) - 1
        assert out["n"] == 80 and out["errors"] == int(prefs.isna().sum())
        assert out["win_rate"] == pytest.approx(100 * soft.mean())
        assert out["standard_error"] == pytest.approx(100 * soft.sem())
        assert out["lc_win_rate"] == pytest.approx(100 * joint[out["generator"]].lc_win_rate)
        assert out["lc_standard_error"] == pytest.approx(100 * joint[out["generator"]].lc_standard_error)
    # Fitting each file alone (no γ) gives different LC numbers: the joint fit is what ran.
    alone = score_annotation_files(paths[:1], n_bootstrap=5)[0]
    assert alone["lc_win_rate"] != pytest.approx(result[0]["lc_win_rate"], abs=1e-3)


def test_token_lengths_use_the_tokenizer(tmp_path):
    """--length-unit tokens: Δ is counted by the tokenizer (here: words), so the LC rate equals a
    judges.stats.lc fit on word-count deltas and differs from the chars one; the raw win rate does not move."""
    rows = [_row(f"q{i}", "x" * (12 + i % 5), " ".join("w" * (i % 7 + 1)), 2 if i % 7 > 2 else 1)
            for i in range(60)]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    words = lambda text: len(text.split())
    by_chars = score_annotation_files([path], n_bootstrap=2)[0]
    by_tokens = score_annotation_files([path], "tokens", words, n_bootstrap=2)[0]
    expected = lc_win_rates(make_lc_data(["m"] * 60, [r["instruction"] for r in rows],
                                         [words(r["output_2"]) - words(r["output_1"]) for r in rows],
                                         [r["preference"] - 1 for r in rows]), n_bootstrap=2)["m"]
    assert by_tokens["lc_win_rate"] == pytest.approx(100 * expected.lc_win_rate)
    assert by_chars["win_rate"] == by_tokens["win_rate"]
    assert by_chars["lc_win_rate"] != pytest.approx(by_tokens["lc_win_rate"], abs=1.0)
    with pytest.raises(HarnessError, match="needs a tokenizer"):
        score_annotation_files([path], "tokens")
    with pytest.raises(HarnessError, match="'words'"):
        score_annotation_files([path], "words")


@pytest.mark.parametrize("content,match", [
    ('{"a": 1}', r"x\.json: expected a JSON list of annotations, got dict"),
    ('[1, 2', r"x\.json: malformed JSON"),
    ('[[1]]', r"x\.json:1: expected an annotation object, got list"),
    (json.dumps([_row("q", "a", "b", 2), {**_row("q", "a", "b", 2), "output_2": None}]),
     r"x\.json:2: field 'output_2': expected a string, got NoneType None"),
    (json.dumps([{k: v for k, v in _row("q", "a", "b", 2).items() if k != "generator_1"}]),
     r"x\.json:1: field 'generator_1': expected a string, got missing"),
])
def test_malformed_files_name_file_row_and_field(tmp_path, content, match):
    (tmp_path / "x.json").write_text(content)
    with pytest.raises(DataError, match=match):
        score_annotation_files([tmp_path / "x.json"])


def test_missing_file_and_conflicting_baselines(tmp_path):
    with pytest.raises(DataError, match="nope.json: annotation file not found"):
        score_annotation_files([tmp_path / "nope.json"])
    a = _write(tmp_path / "a.json", [_row("q", "a", "b", 2, baseline="gpt4")])
    b = _write(tmp_path / "b.json", [_row("q", "a", "b", 2, baseline="davinci")])
    with pytest.raises(DataError, match=r"b\.json:1: generator 'm' .* 'davinci' here but with 'gpt4' at .*a\.json:1"):
        score_annotation_files([a, b])


def test_all_rows_invalid_reports_errors_without_rates(tmp_path):
    path = _write(tmp_path / "a.json", [_row("q1", "a", "b", None), _row("q2", "a", "b", "x")])
    assert score_annotation_files([path]) == [{"generator": "m", "n": 2, "errors": 2, "win_rate": None,
                                               "standard_error": None, "lc_win_rate": None,
                                               "lc_standard_error": None, "avg_length": 1.0,
                                               "lc_win_rate_v1": None, "length_one_sided": None}]
