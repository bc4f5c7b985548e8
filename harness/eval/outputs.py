"""Model outputs for judge-only evaluation: reading, grouping, matching to a suite's data.

Format (DESIGN.md, "Contract: data formats"): AlpacaEval's JSON list of
``{instruction, output, generator, dataset?, id?}``, or JSONL with the same
fields.  Every row keeps where it came from (``file[index]`` for a JSON list,
``file:line`` for JSONL), so each error names the row and the field to fix.
Rows are never dropped: a row that cannot be matched is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

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
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
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


def read_outputs(path: str | Path) -> list[dict]:
    """Validated output rows of one file, each with ``where`` added and ``id`` as a string or None."""
    path = Path(path)
    problems, rows = [], []
    for where, data in _raw_rows(path):
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
    """
    by_id = {str(item["id"]): item for item in items if item.get("id") is not None}
    by_text: dict[str, dict] = {}
    for item in items:
        by_text.setdefault(_key(item["instruction"]), item)
    pairs, unmatched = [], []
    for row in rows:
        item = by_id.get(str(row["id"])) if row.get("id") is not None else None
        if item is not None and _key(item["instruction"]) != _key(row["instruction"]):
            raise DataError(f"{row.get('where', '?')}: field 'id': {row['id']!r} names a prompt of {what} with "
                            f"another instruction ({item['instruction'][:60]!r}, value seen: "
                            f"{row['instruction'][:60]!r})")
        item = item or by_text.get(_key(row["instruction"]))
        if item is None:
            unmatched.append(f"{row.get('where', '?')}: id={row.get('id')!r} instruction={row['instruction'][:60]!r}")
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
