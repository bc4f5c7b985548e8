"""Judge-only inputs: AlpacaEval outputs files, matching to a suite's data, MT-Bench question files."""

from __future__ import annotations

import json

import pytest

from harness.errors import DataError
from harness.eval.outputs import baseline_for, by_generator, match_rows, read_outputs
from harness.eval.suites.mtbench import load_questions


def write_json(path, rows):
    path.write_text(json.dumps(rows))
    return path


def test_reads_alpacaeval_json_and_jsonl(tmp_path):
    rows = [{"instruction": "Say hi", "output": "hi", "generator": "m", "dataset": "d", "id": 3},
            {"instruction": "Say bye", "output": "", "generator": "n"}]
    from_json = read_outputs(write_json(tmp_path / "o.json", rows))
    (tmp_path / "o.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    from_jsonl = read_outputs(tmp_path / "o.jsonl")
    assert [r["id"] for r in from_json] == ["3", None]
    assert [r["where"] for r in from_json] == [f"{tmp_path}/o.json[0]", f"{tmp_path}/o.json[1]"]
    assert [r["where"] for r in from_jsonl] == [f"{tmp_path}/o.jsonl:1", f"{tmp_path}/o.jsonl:2"]
    assert [{k: r[k] for k in ("instruction", "output", "generator")} for r in from_jsonl] == \
        [{k: r[k] for k in ("instruction", "output", "generator")} for r in from_json]
    assert list(by_generator(from_json)) == ["m", "n"]


@pytest.mark.parametrize("row, message", [
    ({"output": "x", "generator": "g"}, r"o.json\[1\]: field 'instruction': missing"),
    ({"instruction": "q", "output": 3, "generator": "g"}, r"o.json\[1\]: field 'output': expected a string, got int"),
    ({"instruction": "q", "output": "x"}, r"o.json\[1\]: field 'generator': missing"),
    ({"instruction": "q", "output": "x", "generator": "g", "id": [1]}, r"field 'id': expected a string or integer"),
    ("just text", r"o.json\[1\]: expected a JSON object, got str"),
])
def test_bad_rows_name_file_index_and_field(tmp_path, row, message):
    good = {"instruction": "q", "output": "x", "generator": "g"}
    with pytest.raises(DataError, match=message):
        read_outputs(write_json(tmp_path / "o.json", [good, row]))


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_text('{"instruction": "q", "output": "x", "generator": "g"}\n\n{"instruction": "q", "output": "x"}\n')
    with pytest.raises(DataError, match=r"o.jsonl:3: field 'generator': missing"):
        read_outputs(path)
    path.write_text('{"instruction": "q", "output": "x", "generator": "g"}\n{oops\n')
    with pytest.raises(DataError, match=r"o.jsonl:2: malformed JSON"):
        read_outputs(path)
    with pytest.raises(DataError, match="expected a JSON list"):
        read_outputs(write_json(tmp_path / "d.json", {"instruction": "q"}))


ITEMS = [{"id": "a-1", "instruction": "What is 1+2?"}, {"id": "a-2", "instruction": "What is 3+4?"}]


def test_match_by_id_or_whitespace_normalized_instruction():
    rows = [{"id": None, "instruction": " What is  3+4? ", "where": "f:1"},
            {"id": "a-1", "instruction": "What is 1+2?", "where": "f:2"}]
    assert [item["id"] for _, item in match_rows(rows, ITEMS, "data")] == ["a-2", "a-1"]


def test_unmatched_rows_are_listed_not_dropped():
    rows = [{"id": None, "instruction": "What is 9+9?", "where": "f:1"},
            {"id": "a-1", "instruction": "What is 1+2?", "where": "f:2"},
            {"id": "zz", "instruction": "Hello?", "where": "f:3"}]
    with pytest.raises(DataError) as info:
        match_rows(rows, ITEMS, "the arith suite's data")
    text = str(info.value)
    assert text.startswith("2 row(s) match no prompt of the arith suite's data")
    assert "f:1: id=None instruction='What is 9+9?'" in text and "f:3: id='zz'" in text and "f:2" not in text


def test_an_id_naming_another_instruction_is_an_error():
    rows = [{"id": "a-1", "instruction": "What is 3+4?", "where": "f:1"}]
    with pytest.raises(DataError, match="f:1: field 'id': 'a-1' names a prompt of data with another instruction"):
        match_rows(rows, ITEMS, "data")


def test_baseline_for_every_item():
    base = [{"id": None, "instruction": "What is 3+4?", "output": "7"},
            {"id": None, "instruction": "What is 1+2?", "output": "3"}]
    items = [{**it, "where": f"d:{i}"} for i, it in enumerate(ITEMS)]
    assert {k: v["output"] for k, v in baseline_for(items, base, "b").items()} == {"a-1": "3", "a-2": "7"}
    with pytest.raises(DataError, match="1 row"):
        baseline_for(items, base[:1], "b")


def test_fastchat_questions_with_reference_file(tmp_path):
    questions = tmp_path / "question.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in [
        {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Shorter."]},
        {"question_id": 111, "category": "math", "turns": ["1+1?", "Times 3?"], "reference": ["2", "6"]},
    ]))
    refs = tmp_path / "ref.jsonl"
    refs.write_text(json.dumps({"question_id": 111, "model_id": "gpt-4",
                                "choices": [{"index": 0, "turns": ["two", "six"]}]}) + "\n")
    items = load_questions(str(questions), str(refs))
    assert [(i["id"], i["category"], i["instruction"], i["reference"]) for i in items] == [
        ("81", "writing", "Write a poem.", None), ("111", "math", "1+1?", ["two", "six"])]
    assert load_questions(str(questions))[1]["reference"] == ["2", "6"]
    questions.write_text(json.dumps({"question_id": 1, "turns": "not a list"}))
    with pytest.raises(DataError, match=r"question.jsonl:1: field 'turns': expected a non-empty list of strings"):
        load_questions(str(questions))
