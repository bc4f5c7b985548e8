"""Fuzzed outputs files for ``harness judge --outputs`` (issue 17, fuzzed inputs).

AlpacaEval-style rows (``instruction``, ``output``, ``generator``, ``dataset?``, ``id?``) and
FastChat answer rows, near-valid and not, as a JSON list or JSONL: ``read_outputs`` gives one
row per valid row (per choice of a FastChat answer) and ``by_generator`` loses none, or
raises a ``DataError`` whose first line names the file.  Sizes: ``tests.fuzzing``.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import DataError
from harness.eval.outputs import by_generator, match_rows, read_outputs
from tests.fuzzing import SCALAR, TEXT, assert_user_error, fuzz_settings, json_values

EXAMPLES = 60
VALUE = st.one_of(TEXT, TEXT, st.lists(TEXT, max_size=2), SCALAR, json_values(max_leaves=3))
ALPACA_ROW = st.fixed_dictionaries({}, optional={k: VALUE for k in ("instruction", "output", "generator", "dataset",
                                                                    "id")})
FASTCHAT_ROW = st.fixed_dictionaries(
    {"question_id": st.one_of(st.integers(0, 99), TEXT, SCALAR),
     "choices": st.one_of(st.lists(st.fixed_dictionaries({"turns": st.one_of(st.lists(TEXT, max_size=2), VALUE)}),
                                   max_size=2), VALUE)},
    optional={"model_id": VALUE})


def _expected_rows(items: list) -> int:
    """Rows a file of ``items`` gives when it is valid: one per row, one per choice of a FastChat answer."""
    return sum(len(i["choices"]) if isinstance(i, dict) and "question_id" in i and "choices" in i
               and "instruction" not in i else 1 for i in items)


@fuzz_settings(EXAMPLES)
@given(items=st.lists(st.one_of(ALPACA_ROW, ALPACA_ROW, FASTCHAT_ROW, json_values(max_leaves=3)), max_size=5),
       suffix=st.sampled_from([".json", ".jsonl"]), ascii_only=st.booleans())
def test_fuzzed_outputs_are_read_whole_or_name_the_file(tmp_path, items, suffix, ascii_only):
    path = tmp_path / f"outputs{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(items, ensure_ascii=ascii_only), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(i, ensure_ascii=ascii_only) + "\n" for i in items), encoding="utf-8")
    try:
        rows = read_outputs(path)
        groups = by_generator(rows)
        pairs = match_rows(rows, [{"id": r["id"], "instruction": r["instruction"]} for r in rows], "the file")
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions escape
        assert_user_error(exc, str(path))
        return
    assert len(rows) == _expected_rows(items) == sum(len(g) for g in groups.values()) == len(pairs)


def test_a_line_separator_inside_an_output_is_not_a_line_break(tmp_path):
    """Found by fuzzing: JSONL was split with str.splitlines, which also cuts at U+2028 (legal unescaped
    inside a JSON string), so a model output holding one became two malformed lines."""
    path = tmp_path / "model.jsonl"
    row = {"instruction": "Say it", "output": "line one\u2028line two", "generator": "m"}
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    (read,) = read_outputs(path)
    assert read["output"] == "line one\u2028line two"


def test_an_outputs_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "model.jsonl"
    path.write_bytes(b'{"instruction": "a", "output": "b", "generator": "m"}\n{"output": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"model.jsonl:2: not UTF-8"):
        read_outputs(path)
