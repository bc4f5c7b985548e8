"""Suite ``mtbench``: FastChat question files, multi-turn, judged pairwise against a baseline or single.

Scoring judges the whole conversation (``judges.pairwise`` / ``judges.single``),
reference-guided where the item has reference answers.  Judge-only outputs are
matched to the questions, so each row's ``output`` must hold one answer per turn.

Items come from FastChat's ``question.jsonl``.

A question is ``{question_id, category, turns: [str, ...], reference?: [str, ...]}``;
reference answers may instead come from FastChat's reference-answer file
(``{question_id, choices: [{turns: [...]}]}``), which wins over an inline one.
``toy://chat-eval`` (two-turn arithmetic chats) has the same fields.  Items get
``id`` (the question id as a string, or the row's own ``id``), ``turns``,
``category``, ``reference`` and ``instruction`` (the first turn).
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.config.suite_options import MTBenchOptions
from harness.data.load import TOY_PREFIX
from harness.errors import DataError
from harness.eval.suite import Suite
from harness.eval.suites import pairwise, single
from harness.toy import toy_dataset

NAME = "mtbench"


def _jsonl(path: str) -> list[tuple[str, object]]:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    return rows


def _raw(uri: str) -> list[tuple[str, object]]:
    if uri.startswith(TOY_PREFIX):
        return [(f"{uri}:{i + 1}", row) for i, row in enumerate(toy_dataset(uri[len(TOY_PREFIX):]))]
    return _jsonl(uri)


def _strings(value, where: str, field: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise DataError(f"{where}: field '{field}': expected a non-empty list of strings (value seen: {value!r:.80})")
    return value


def question_item(where: str, data) -> dict:
    """One validated item from a question row."""
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(data).__name__}")
    qid = data.get("id", data.get("question_id"))
    if not isinstance(qid, (str, int)) or isinstance(qid, bool):
        raise DataError(f"{where}: field 'question_id': expected an integer or string (value seen: {qid!r})")
    turns = _strings(data.get("turns"), where, "turns")
    reference = data.get("reference")
    if reference is not None:
        reference = _strings(reference, where, "reference")
    return {"id": str(qid), "question_id": data.get("question_id", qid), "turns": turns,
            "category": data.get("category") or "all", "reference": reference, "instruction": turns[0],
            "where": where}


def reference_answers(path: str) -> dict[str, list[str]]:
    """question id -> reference turns, from FastChat's reference-answer JSONL."""
    out = {}
    for where, data in _jsonl(path):
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise DataError(f"{where}: field 'choices': expected a list of {{turns: [...]}} objects")
        out[str(data.get("question_id"))] = _strings(choices[0].get("turns"), where, "choices[0].turns")
    return out


def load_questions(uri: str, reference_file: str | None = None) -> list[dict]:
    """The items of a question file or toy dataset, with reference answers merged in by question id."""
    items = [question_item(where, data) for where, data in _raw(uri)]
    if not items:
        raise DataError(f"{uri}: no questions")
    if reference_file:
        refs = reference_answers(reference_file)
        for item in items:
            item["reference"] = refs.get(str(item["question_id"]), item["reference"])
    return items


def items(options: dict) -> list[dict]:
    return load_questions(options["data"], options.get("reference_answers"))[:options.get("limit")]


def scorer(options: dict):
    """Pairwise against the baseline (``mode: pairwise``, the default) or single grades."""
    return pairwise.score if options.get("mode", "pairwise") == "pairwise" else single.score


def needs_baseline(options: dict) -> bool:
    return options.get("mode") == "pairwise"


SUITE = Suite(NAME, MTBenchOptions, items, scorer, needs_baseline=needs_baseline, ground_truth=True,
              primary_metric="win_rate")
