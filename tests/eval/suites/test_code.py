"""The code suite's items: HumanEval-style files, and errors that name the file, line and field."""

import json

import pytest

from harness.errors import DataError
from harness.eval.suites.code import load_code_items


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_load_humaneval_style_file(tmp_path):
    rows = [{"task_id": "H/0", "prompt": "def inc(x):\n", "test": "def check(candidate):\n    pass\n",
             "entry_point": "inc"},
            {"id": "plain", "prompt": "p", "tests": "assert True\n"}]
    items = load_code_items(_write_jsonl(tmp_path / "c.jsonl", rows))
    assert [i["id"] for i in items] == ["H/0", "plain"]
    assert items[0]["tests"] == rows[0]["test"] and items[1]["entry_point"] is None
    assert load_code_items(str(tmp_path / "c.jsonl"), limit=1) == items[:1]


@pytest.mark.parametrize("row,match", [
    ({"prompt": "p"}, r"c.jsonl:1: field 'tests'.*None"),
    ({"prompt": "p", "tests": "  "}, r"c.jsonl:1: field 'tests'"),
    ({"prompt": "p", "tests": "assert 1", "entry_point": "not valid"}, r"field 'entry_point'.*'not valid'"),
    ({"prompt": "p", "tests": "assert 1", "entry_point": "f"}, r"must define check\(candidate\)"),
])
def test_bad_items_name_file_line_field(tmp_path, row, match):
    with pytest.raises(DataError, match=match):
        load_code_items(_write_jsonl(tmp_path / "c.jsonl", [row]))


def test_duplicate_ids_are_an_error(tmp_path):
    rows = [{"id": "a", "prompt": "p", "tests": "pass"}] * 2
    with pytest.raises(DataError, match=r"c.jsonl:2: field 'id': duplicate id 'a' \(first at .*c.jsonl:1\)"):
        load_code_items(_write_jsonl(tmp_path / "c.jsonl", rows))
