"""Suite ``mtbench``: pairwise or single grading over FastChat MT-Bench files, multi-turn.

Readers for FastChat's formats:

- questions (``question.jsonl``): ``{"question_id", "category", "turns": [...],
  "reference"?: [...]}``, one JSON object a line; ``toy://chat-eval`` has the same fields;
- answers (``model_answer/*.jsonl`` and ``reference_answer/*.jsonl``):
  ``{"question_id", "model_id"?, "choices": [{"index": 0, "turns": [...]}]}``; the
  first choice is used.

Each question is judged once over its whole conversation (the multi-turn
templates when it has more than one turn), not turn by turn as FastChat does.
Questions of ``REFERENCE_CATEGORIES`` (MT-Bench's math, reasoning, coding) are
reference-guided: the reference answers come from the references file, else
the question's own ``reference`` field; such a question without one is an error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from harness.errors import DataError
from judges.judged import Judged
from judges.pairwise import pairwise_judge
from judges.single import single_judge

REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
MODES = ("single", "pairwise")


def _jsonl(path: str) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line; malformed lines are DataErrors."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{path}: MT-Bench file not found")
    out = []
    for number, text in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
        out.append((number, value))
    return out


def _check_turns(value, where: str, field: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise DataError(f"{where}: field '{field}': expected a non-empty list of strings, got {value!r:.80}")
    return value


def read_questions(uri: str) -> list[dict]:
    """Questions of a FastChat ``question.jsonl`` or of ``toy://chat-eval``, checked."""
    if uri.startswith("toy://"):
        from harness.data import load_rows

        lines = [(row.line, row.data) for row in load_rows(uri, "eval")]
    else:
        lines = _jsonl(uri)
    questions, seen = [], set()
    for number, q in lines:
        where = f"{uri}:{number}"
        if "question_id" not in q:
            raise DataError(f"{where}: field 'question_id': missing")
        if q["question_id"] in seen:
            raise DataError(f"{where}: field 'question_id': duplicate value {q['question_id']!r}")
        seen.add(q["question_id"])
        turns = _check_turns(q.get("turns"), where, "turns")
        ref = q.get("reference")
        questions.append({"question_id": q["question_id"], "category": str(q.get("category") or "all"),
                          "turns": turns, "reference": _check_turns(ref, where, "reference") if ref else None})
    if not questions:
        raise DataError(f"{uri}: no questions")
    return questions


def read_answers(path: str) -> dict:
    """question_id -> the first choice's turns, from a FastChat model/reference answer file."""
    answers = {}
    for number, row in _jsonl(path):
        where = f"{path}:{number}"
        choices = row.get("choices")
        if "question_id" not in row:
            raise DataError(f"{where}: field 'question_id': missing")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise DataError(f"{where}: field 'choices': expected a list of {{'turns': [...]}}, got {choices!r:.80}")
        answers[row["question_id"]] = _check_turns(choices[0].get("turns"), where, "choices[0].turns")
    return answers


def _answer(answers: dict, question: dict, what: str) -> list[str]:
    qid = question["question_id"]
    if qid not in answers:
        raise DataError(f"question_id {qid!r}: no {what} answer")
    if len(answers[qid]) != len(question["turns"]):
        raise DataError(f"question_id {qid!r}: {what} answer has {len(answers[qid])} turns, "
                        f"the question {len(question['turns'])}")
    return answers[qid]


def mtbench_items(questions: Sequence[dict], candidate: dict, baseline: dict | None = None,
                  references: dict | None = None) -> list[dict]:
    """Items for ``pairwise_judge`` (with baseline) or ``single_judge`` (without)."""
    items = []
    for q in questions:
        item = {"id": q["question_id"], "category": q["category"], "turns": q["turns"]}
        if q["category"] in REFERENCE_CATEGORIES:
            ref = (references or {}).get(q["question_id"]) or q.get("reference")
            if not ref:
                raise DataError(f"question_id {q['question_id']!r} (category {q['category']}): "
                                "needs a reference answer; give a references file")
            item["reference"] = ref
        if baseline is None:
            item["answer"] = _answer(candidate, q, "model")
        else:
            item["candidate"] = _answer(candidate, q, "model")
            item["baseline"] = _answer(baseline, q, "baseline")
        items.append(item)
    return items


def mtbench_judge(client, questions: Sequence[dict], candidate: dict, *, mode: str = "single",
                  baseline: dict | None = None, references: dict | None = None) -> Judged:
    """Judge MT-Bench questions: ``mode`` "single" (1-10 grades) or "pairwise" (needs ``baseline``).

    ``candidate`` / ``baseline`` / ``references`` map question_id -> per-turn answers
    (``read_answers``, or generated outputs).  Metrics and rows are those of
    ``single_judge`` / ``pairwise_judge``.
    """
    if mode not in MODES:
        raise ValueError(f"mtbench mode must be one of {MODES}, got {mode!r}")
    if mode == "pairwise" and baseline is None:
        raise DataError("mtbench pairwise mode needs baseline answers")
    items = mtbench_items(questions, candidate, baseline if mode == "pairwise" else None, references)
    return pairwise_judge(client, items) if mode == "pairwise" else single_judge(client, items)
