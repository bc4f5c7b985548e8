"""Fuzzed AlpacaEval annotation files for ``harness judge --annotations`` (issue 17, fuzzed inputs).

Rows with random fields and preferences (numbers in and out of range, NaN, strings, null),
as a JSON list or JSONL: scoring either raises a ``DataError`` whose first line names the
file, or reports every row: the generators' ``n`` sum to the rows, and ``errors`` counts
exactly the rows without a valid preference.  Sizes: ``tests.fuzzing``.
"""

from __future__ import annotations

import json
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import DataError
from judges.stats.annotations import preference_label, score_annotation_files
from tests.fuzzing import SCALAR, TEXT, assert_user_error, fuzz_settings, json_values

EXAMPLES = 40
NAME = st.sampled_from(["base", "m1", "m2"])
PREFERENCE = st.one_of(st.sampled_from([0, 1, 1.5, 2, 2.0, 1.25]), st.floats(allow_nan=True, allow_infinity=True),
                       SCALAR)
ROW = st.fixed_dictionaries(
    {"instruction": st.sampled_from(["a", "b", "c", "d"]), "output_1": TEXT, "generator_1": st.just("base"),
     "output_2": TEXT, "generator_2": NAME, "preference": PREFERENCE})
BROKEN_ROW = st.one_of(ROW.map(lambda r: {k: v for k, v in r.items() if k != "output_1"}),
                       ROW.map(lambda r: {**r, "generator_2": 7}), json_values(max_leaves=3))


@fuzz_settings(EXAMPLES)
@given(items=st.lists(st.one_of(ROW, ROW, ROW, BROKEN_ROW), min_size=1, max_size=8),
       suffix=st.sampled_from([".json", ".jsonl"]), ascii_only=st.booleans())
def test_fuzzed_annotations_count_every_row_or_name_the_file(tmp_path, items, suffix, ascii_only):
    path = tmp_path / f"annotations{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(items, ensure_ascii=ascii_only), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(i, ensure_ascii=ascii_only) + "\n" for i in items), encoding="utf-8")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one-sided length warnings are expected on random lengths
            scored = score_annotation_files([path], n_bootstrap=5)
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions escape
        assert_user_error(exc, str(path))
        return
    assert sum(r["n"] for r in scored) == len(items)
    assert sum(r["errors"] for r in scored) == sum(preference_label(i.get("preference")) is None for i in items)
    for r in scored:
        for key in ("win_rate", "lc_win_rate"):
            assert r[key] is None or 0.0 <= r[key] <= 100.0


def test_a_line_separator_inside_an_annotation_is_not_a_line_break(tmp_path):
    """Found by fuzzing: U+2028 inside an output split one JSONL row into two malformed lines."""
    path = tmp_path / "annotations.jsonl"
    row = {"instruction": "a", "output_1": "x\u2028y", "generator_1": "base", "output_2": "z",
           "generator_2": "m", "preference": 2}
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    (scored,) = score_annotation_files([path], n_bootstrap=5)
    assert scored["n"] == 1 and scored["errors"] == 0


def test_an_annotation_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "annotations.json"
    path.write_bytes(b'[{"instruction": "caf\xe9"}]')
    with pytest.raises(DataError, match=r"annotations.json:1: not UTF-8"):
        score_annotation_files([path])
