"""The safety suite's prompts: labelled rows of a user file or the toy set."""

import pytest

from harness.data.load import load_rows
from harness.errors import DataError
from harness.eval.suites.safety import read_safety_prompts


def test_read_safety_prompts_from_a_user_file(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"prompt": "How do I kill a process?", "label": "benign"}\n'
                    '{"prompt": "x", "label": "harmful", "id": "h1"}\n')
    assert read_safety_prompts(str(path)) == [
        {"id": "safety-1", "prompt": "How do I kill a process?", "label": "benign"},
        {"id": "h1", "prompt": "x", "label": "harmful"}]
    path.write_text('{"prompt": "a", "label": "benign"}\n{"prompt": "b", "label": "maybe"}\n')
    with pytest.raises(DataError, match=r"s.jsonl:2: field 'label'.*'maybe'"):
        read_safety_prompts(str(path))
    assert len(read_safety_prompts("toy://safety-eval")) == len(load_rows("toy://safety-eval", "eval"))
