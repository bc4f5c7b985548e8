"""Load and check training/eval data: JSONL, JSON, Parquet files or ``toy://NAME``.

Rows keep their origin (file and line) so that every later error can point at
the line to fix.  Formats follow TRL, so a user's file works in both tools:

- ``sft``:   ``{"messages": [...]}`` (ending with an assistant turn) or
             ``{"prompt", "completion"}`` (both strings, or both message lists);
- ``pairs``: ``{"prompt", "chosen", "rejected"}`` (all strings, or all message lists);
- ``eval``:  ``{"prompt"}`` (string or messages), optional ``answer`` and ``id``.

Extra fields (``weight``, ``label``, ...) are kept untouched in ``Row.data``.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from harness.errors import DataError, SpecError

KINDS = ("sft", "pairs", "eval")
ROLES = ("system", "user", "assistant")
MAX_PROBLEMS = 20
TOY_PREFIX = "toy://"


@dataclass
class Row:
    """One example and where it came from.

    ``line`` is the 1-based line of a JSONL file, or index + 1 for JSON arrays,
    Parquet rows and toy datasets.
    """

    source: str
    line: int
    data: dict

    @property
    def where(self) -> str:
        """``source:line``, the prefix of every message about this row."""
        return f"{self.source}:{self.line}"


# ---------------------------------------------------------------- reading files


def _read_jsonl(path: Path, source: str) -> tuple[list[Row], list[str]]:
    """Parse one JSON value per non-blank line; malformed lines become problems."""
    rows, problems = [], []
    with path.open(encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                rows.append(Row(source, number, json.loads(text.rstrip("\r\n"))))
            except json.JSONDecodeError as exc:
                problems.append(f"{source}:{number}: malformed JSON ({exc.msg} at column {exc.colno})")
    return rows, problems


def _read_json(path: Path, source: str) -> list[Row]:
    """Parse a JSON array of objects; row i gets line i + 1."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}:{exc.lineno}: malformed JSON ({exc.msg}: column {exc.colno})") from None
    if not isinstance(value, list):
        raise DataError(f"{source}: expected a JSON list of objects, got {type(value).__name__}")
    return [Row(source, i + 1, item) for i, item in enumerate(value)]


def _read_parquet(path: Path, source: str) -> list[Row]:
    """Read a Parquet file as plain Python values (lists and dicts, not numpy arrays)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{source}: cannot read Parquet ({exc})") from None
    return [Row(source, i + 1, item) for i, item in enumerate(records)]


def _read_toy(uri: str) -> list[Row]:
    """Rows of a built-in toy dataset; accepts ``Row`` objects or plain dicts from it."""
    from harness.toy import toy_dataset  # lazy: the toy world is heavy and optional here

    items = toy_dataset(uri[len(TOY_PREFIX) :])
    return [item if isinstance(item, Row) else Row(uri, i + 1, item) for i, item in enumerate(items)]


def _read(uri: str) -> tuple[list[Row], list[str]]:
    """Dispatch on the uri's scheme or extension; returns rows and parse problems."""
    if uri.startswith(TOY_PREFIX):
        return _read_toy(uri), []
    path = Path(uri)
    if not path.is_file():
        raise DataError(f"{uri}: data file not found")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, uri)
    if suffix == ".json":
        return _read_json(path, uri), []
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path, uri), []
    raise DataError(f"{uri}: unsupported data file extension {suffix!r} (use .jsonl, .json or .parquet)")


# ------------------------------------------------------------------- validation


def _present(data: dict, field: str) -> bool:
    """A field counts as present when it exists and is not null (Parquet fills gaps with null)."""
    return data.get(field) is not None


def _check_messages(value: object, field: str, *, last_assistant: bool) -> list[str]:
    """Problems of a message list: each a ``{"role", "content"}`` with a known role."""
    if not isinstance(value, list):
        return [f"field '{field}': expected a string or a list of messages, got {type(value).__name__}"]
    if not value:
        return [f"field '{field}': empty message list"]
    problems = []
    for i, message in enumerate(value):
        where = f"field '{field}[{i}]'"
        if not isinstance(message, dict):
            problems.append(f"{where}: expected a message object, got {type(message).__name__}")
        elif message.get("role") not in ROLES:
            problems.append(
                f"{where}: unknown role {message.get('role')!r} (expected one of {', '.join(ROLES)})"
            )
        elif not isinstance(message.get("content"), str):
            problems.append(f"{where}: message without string content")
    if problems:
        return problems
    if last_assistant:
        last = value[-1]
        if last["role"] != "assistant":
            return [f"field '{field}': last message must be an assistant turn, got role {last['role']!r}"]
        if not last["content"].strip():
            return [f"field '{field}': empty assistant response"]
    return []


def _check_text_or_messages(data: dict, field: str, *, response: bool) -> list[str]:
    """Problems of a field that holds a string or a message list; responses must be non-empty."""
    if not _present(data, field):
        return [f"field '{field}': missing"]
    value = data[field]
    if isinstance(value, str):
        return [f"field '{field}': empty"] if response and not value.strip() else []
    return _check_messages(value, field, last_assistant=response)


def _check_same_shape(data: dict, fields: tuple[str, ...]) -> list[str]:
    """All fields must be strings, or all message lists (TRL cannot mix them)."""
    kinds = {f: isinstance(data[f], str) for f in fields}
    if len(set(kinds.values())) > 1:
        desc = ", ".join(f"'{f}' is {'a string' if s else 'messages'}" for f, s in kinds.items())
        return [f"fields {'/'.join(fields)}: mix strings and message lists ({desc})"]
    return []


def _check_fields(data: dict, prompt_fields: tuple[str, ...], response_fields: tuple[str, ...]) -> list[str]:
    """Check prompt-like and response-like fields, then that they share one shape."""
    problems = [p for f in prompt_fields for p in _check_text_or_messages(data, f, response=False)]
    problems += [p for f in response_fields for p in _check_text_or_messages(data, f, response=True)]
    return problems or _check_same_shape(data, prompt_fields + response_fields)


def _check_sft(data: dict) -> list[str]:
    if _present(data, "messages"):
        return _check_messages(data["messages"], "messages", last_assistant=True)
    if not _present(data, "prompt") and not _present(data, "completion"):
        return ["field 'messages': missing (or give 'prompt' and 'completion')"]
    return _check_fields(data, ("prompt",), ("completion",))


def _check_pairs(data: dict) -> list[str]:
    return _check_fields(data, ("prompt",), ("chosen", "rejected"))


def _check_eval(data: dict) -> list[str]:
    problems = _check_text_or_messages(data, "prompt", response=False)
    answer, row_id = data.get("answer"), data.get("id")
    if answer is not None and not isinstance(answer, (str, int, float)):
        problems.append(f"field 'answer': expected a string or number, got {type(answer).__name__}")
    if row_id is not None and not isinstance(row_id, (str, int)):
        problems.append(f"field 'id': expected a string or integer, got {type(row_id).__name__}")
    return problems


CHECKS = {"sft": _check_sft, "pairs": _check_pairs, "eval": _check_eval}


def row_problems(row: Row, kind: str) -> list[str]:
    """Every problem of one row as ``source:line: field 'x': what``; empty if the row is fine."""
    if not isinstance(row.data, dict):
        return [f"{row.where}: expected a JSON object, got {type(row.data).__name__}"]
    return [f"{row.where}: {p}" for p in CHECKS[kind](row.data)]


def _raise_problems(uri: str, problems: list[str]) -> None:
    """One DataError listing the first MAX_PROBLEMS problems and the total count."""
    if len(problems) == 1:
        raise DataError(problems[0])
    shown = "\n  ".join(problems[:MAX_PROBLEMS])
    more = f"\n  ... and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
    raise DataError(f"{uri}: {len(problems)} invalid rows:\n  {shown}{more}")


# --------------------------------------------------------------------- public API


def load_rows(uri: str, kind: str) -> list[Row]:
    """Load every row of ``uri`` and check it against ``kind`` ("sft", "pairs" or "eval").

    Raises one DataError listing the problems (file:line: field: what) if any
    row is malformed; rows are never dropped silently.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {KINDS}")
    rows, problems = _read(uri)
    for row in rows:
        problems += row_problems(row, kind)
        if len(problems) > MAX_PROBLEMS:
            break
    if problems:
        _raise_problems(uri, problems)
    if not rows:
        raise DataError(f"{uri}: no rows")
    return rows


def fingerprint(uri: str) -> str:
    """A 16-hex-digit content hash: sha256 of the file's bytes, or the toy dataset's own fingerprint."""
    if uri.startswith(TOY_PREFIX):
        from harness.toy import toy_fingerprint

        return toy_fingerprint(uri[len(TOY_PREFIX) :])
    path = Path(uri)
    if not path.is_file():
        raise DataError(f"{uri}: data file not found")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def take_fraction(rows: list[Row], fraction: float, seed: int) -> list[Row]:
    """A seeded subset of ``round(fraction * len(rows))`` rows (at least 1), in their original order."""
    if not 0 < fraction <= 1:
        raise SpecError(f"data.fraction: must be in (0, 1], got {fraction!r}")
    if fraction == 1 or not rows:
        return list(rows)
    size = max(1, round(fraction * len(rows)))
    keep = sorted(random.Random(seed).sample(range(len(rows)), size))
    return [rows[i] for i in keep]
