"""Model outputs for judge-only evaluation: reading, grouping, matching to a suite's data.

Format (DESIGN.md, "Contract: data formats"): AlpacaEval's JSON list of
``{instruction, output, generator, dataset?, id?}``, or JSONL with the same
fields.  FastChat's MT-Bench answer files (``model_answer/*.jsonl``: ``{question_id,
model_id, choices: [{turns: [...]}, ...]}``) are read as they are: one row per choice
(sample), ``id`` the question id, ``generator`` the model id, ``output`` the turns, and no
instruction, so they match a suite's questions by id.  Every row keeps where it came from
(``file[index]`` for a JSON list, ``file:line`` for JSONL), so each error names the row and
the field to fix.  Rows are never dropped: a row that cannot be matched is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.data.load import jsonl_lines, read_utf8
from harness.errors import DataError

MAX_LISTED = 20
REQUIRED = ("instruction", "output", "generator")


def _row_problems(data, where: str) -> list[str]:
    if not isinstance(data, dict):
        return [f"{where}: expected a JSON object, got {type(data).__name__}"]
    problems = []
    for key in REQUIRED:
        value = data.get(key)
        # A multi-turn output (mtbench) is a list of per-turn answers.
        turns = key == "output" and isinstance(value, list) and all(isinstance(t, str) for t in value)
        if value is None:
            problems.append(f"{where}: field '{key}': missing")
        elif not isinstance(value, str) and not turns:
            problems.append(f"{where}: field '{key}': expected a string, got {type(value).__name__}")
    if isinstance(data.get("instruction"), str) and not data["instruction"].strip():
        problems.append(f"{where}: field 'instruction': empty")
    if data.get("id") is not None and not isinstance(data["id"], (str, int)):
        problems.append(f"{where}: field 'id': expected a string or integer, got {type(data['id']).__name__}")
    if data.get("dataset") is not None and not isinstance(data["dataset"], str):
        problems.append(f"{where}: field 'dataset': expected a string, got {type(data['dataset']).__name__}")
    return problems


def _raw_rows(path: Path) -> list[tuple[str, object]]:
    """(where, parsed value) per row of a JSON list or a JSONL file."""
    if not path.is_file():
        raise DataError(f"{path}: outputs file not found")
    text = read_utf8(path, str(path))
    if path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in jsonl_lines(text):
            try:
                rows.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        return rows
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON list of outputs (AlpacaEval format), got {type(value).__name__}")
    return [(f"{path}[{i}]", item) for i, item in enumerate(value)]


def is_fastchat_answer(data) -> bool:
    return isinstance(data, dict) and "question_id" in data and "choices" in data and "instruction" not in data


def _fastchat_rows(data: dict, where: str) -> tuple[list[dict], list[str]]:
    """One output row per choice of a FastChat answer, or the problems that stop it."""
    problems = []
    if not isinstance(data["question_id"], (str, int)) or isinstance(data["question_id"], bool):
        problems.append(f"{where}: field 'question_id': expected a string or integer")
    if not isinstance(data.get("model_id"), str) or not data["model_id"].strip():
        problems.append(f"{where}: field 'model_id': expected the model's name")
    choices = data["choices"]
    if not isinstance(choices, list) or not choices:
        return [], problems + [f"{where}: field 'choices': expected a non-empty list of {{turns: [...]}}"]
    for k, choice in enumerate(choices):
        turns = choice.get("turns") if isinstance(choice, dict) else None
        if not (isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns)):
            problems.append(f"{where}: field 'choices[{k}].turns': expected a list of strings")
    if problems:
        return [], problems
    return [{"id": str(data["question_id"]), "instruction": None, "output": list(choice["turns"]),
             "generator": data["model_id"], "where": where} for choice in choices], []


def read_outputs(path: str | Path) -> list[dict]:
    """Validated output rows of one file, each with ``where`` added and ``id`` as a string or None."""
    path = Path(path)
    problems, rows = [], []
    for where, data in _raw_rows(path):
        if is_fastchat_answer(data):
            converted, found = _fastchat_rows(data, where)
            problems += found
            rows += converted
            continue
        found = _row_problems(data, where)
        problems += found
        if not found:
            row_id = data.get("id")
            rows.append({**data, "id": None if row_id is None else str(row_id), "where": where})
    if problems:
        raise DataError(_listing(f"{path}: {len(problems)} problem(s)", problems))
    if not rows:
        raise DataError(f"{path}: no output rows")
    return rows


def read_output_files(paths) -> list[dict]:
    return [row for p in paths for row in read_outputs(p)]


def by_generator(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by ``generator``, in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["generator"], []).append(row)
    return groups


def _listing(head: str, lines: list[str]) -> str:
    if len(lines) == 1 and not head.endswith(":"):
        return lines[0]
    shown = "\n  ".join(lines[:MAX_LISTED])
    more = f"\n  ... and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
    return f"{head.rstrip(':')}:\n  {shown}{more}"


def instruction_of(prompt) -> str:
    """The instruction text of a prompt: the string itself, or the last user turn of a message list."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


def _key(text: str) -> str:
    return " ".join(text.split())  # whitespace differences do not make two instructions differ


def match_rows(rows: list[dict], items: list[dict], what: str) -> list[tuple[dict, dict]]:
    """Pair each row with the item of the same ``id`` or, failing that, the same instruction.

    ``rows`` and ``items`` are dicts with ``instruction`` and an optional ``id``.
    An id match whose instructions differ is an error (two different data
    sets), and so is any row left unmatched: the error lists every such row.
    A row without an instruction (a FastChat answer) matches by id alone.
    """
    by_id = {str(item["id"]): item for item in items if item.get("id") is not None}
    by_text: dict[str, dict] = {}
    for item in items:
        if item.get("instruction") is not None:
            by_text.setdefault(_key(item["instruction"]), item)
    pairs, unmatched = [], []
    for row in rows:
        item = by_id.get(str(row["id"])) if row.get("id") is not None else None
        texts = (item or {}).get("instruction"), row.get("instruction")
        if item is not None and None not in texts and _key(texts[0]) != _key(texts[1]):
            raise DataError(f"{row.get('where', '?')}: field 'id': {row['id']!r} names a prompt of {what} with "
                            f"another instruction ({texts[0][:60]!r}, value seen: {texts[1][:60]!r})")
        if item is None and row.get("instruction") is not None:
            item = by_text.get(_key(row["instruction"]))
        if item is None:
            shown = None if row.get("instruction") is None else row["instruction"][:60]
            unmatched.append(f"{row.get('where', '?')}: id={row.get('id')!r} instruction={shown!r}")
        else:
            pairs.append((row, item))
    if unmatched:
        raise DataError(_listing(f"{len(unmatched)} row(s) match no prompt of {what} by id or instruction:",
                                 unmatched))
    return pairs


def baseline_for(items: list[dict], rows: list[dict], what: str) -> dict[str, dict]:
    """item id -> the baseline row of the same id or instruction; an item without one is an error."""
    pairs = match_rows(items, rows, what)
    return {item["id"]: row for item, row in pairs}
