"""Load and check training/eval data: JSONL, JSON, Parquet files or ``toy://NAME``.

Rows keep their origin (file and line) so that every later error can point at
the line to fix.  Formats follow TRL, so a user's file works in both tools:

- ``sft``:   ``{"messages": [...]}`` (ending with an assistant turn; every
             assistant turn is a target under ``assistant_turns: all``),
             ``{"prompt", "completion"}`` (both strings, or both message lists),
             or ``{"text"}`` (continued pretraining: every token is a target);
- ``pairs``: ``{"prompt", "chosen", "rejected"}`` (all strings, or all message
             lists), or implicit-prompt pairs (HH-RLHF style): ``{"chosen",
             "rejected"}`` message lists whose longest common prefix of
             messages is the prompt (see ``split_implicit_prompt``);
- ``kto``:   ``{"prompt", "completion", "label": true|false}``, or any pairs row,
             which ``pairs_to_kto`` turns into two KTO rows;
- ``eval``:  ``{"prompt"}`` (string or messages), optional ``answer`` and ``id``.

Extra fields (``weight``, ``label``, ...) are kept untouched in ``Row.data``.
Implicit-prompt pairs are returned in explicit form: ``prompt`` is added and
``chosen``/``rejected`` keep only what follows it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from harness.errors import DataError, SpecError
from harness.toy import toy_dataset, toy_fingerprint

KINDS = ("sft", "pairs", "kto", "eval")
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


def read_utf8(path: Path, source: str) -> str:
    """The text of a UTF-8 file (a leading BOM dropped); unreadable or non-UTF-8 bytes are a DataError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{source}: cannot read the file ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(f"{source}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); "
                        "save the file as UTF-8") from None


def jsonl_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line) of every non-blank line.

    Lines end at ``\n`` only: ``str.splitlines`` would also cut at U+2028 and other
    separators that JSON allows unescaped inside strings.
    """
    return [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]


def _read_jsonl(path: Path, source: str) -> tuple[list[Row], list[str]]:
    """Parse one JSON value per non-blank line; malformed lines become problems."""
    rows, problems = [], []
    for number, text in jsonl_lines(read_utf8(path, source)):
        try:
            rows.append(Row(source, number, json.loads(text)))
        except json.JSONDecodeError as exc:
            problems.append(f"{source}:{number}: malformed JSON ({exc.msg} at column {exc.colno})")
    return rows, problems


def _read_json(path: Path, source: str) -> list[Row]:
    """Parse a JSON array of objects; row i gets line i + 1."""
    try:
        value = json.loads(read_utf8(path, source))
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


def read_rows(uri: str) -> list[Row]:
    """Every row of ``uri`` as it is, unchecked against any kind; malformed lines are one DataError."""
    rows, problems = _read(uri)
    if problems:
        _raise_problems(uri, problems)
    return rows


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
        problems = _check_messages(data["messages"], "messages", last_assistant=True)
        if not problems and data["messages"][0]["role"] == "assistant":
            # the prompt is every turn before the first assistant turn (TRL's rule): there must be one
            return [("field 'messages[0]': the conversation starts with an assistant turn; put the user (or "
                     "system) turn it answers before it")]
        return problems
    if _present(data, "text") and not _present(data, "prompt") and not _present(data, "completion"):
        text = data["text"]
        if not isinstance(text, str):
            return [f"field 'text': expected a string, got {type(text).__name__}"]
        return [] if text.strip() else ["field 'text': empty"]
    if not _present(data, "prompt") and not _present(data, "completion"):
        return ["field 'messages': missing (or give 'prompt' and 'completion', or 'text')"]
    return _check_fields(data, ("prompt",), ("completion",))


def common_message_prefix(chosen: list, rejected: list) -> int:
    """Number of leading messages ``chosen`` and ``rejected`` share, leaving each at least one.

    The cap follows TRL's ``extract_prompt``: identical conversations (or one a
    prefix of the other) keep their last message as the response.
    """
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    return min(n, len(chosen) - 1, len(rejected) - 1)


def split_implicit_prompt(data: dict) -> dict:
    """An implicit-prompt pair in explicit form: ``prompt`` = the common message prefix.

    ``chosen``/``rejected`` keep the messages after it; other fields are kept.
    """
    chosen, rejected = data["chosen"], data["rejected"]
    k = common_message_prefix(chosen, rejected)
    return {**data, "prompt": chosen[:k], "chosen": chosen[k:], "rejected": rejected[k:]}


def _check_implicit_pairs(data: dict) -> list[str]:
    """Implicit-prompt pairs: two message lists; what follows their common prefix is assistant turns."""
    strings = [f for f in ("chosen", "rejected") if isinstance(data.get(f), str)]
    if strings:
        return [(f"field 'prompt': missing (needed when '{strings[0]}' is a string; "
                 "only message lists carry an implicit prompt)")]
    problems = []
    for field in ("chosen", "rejected"):
        if not _present(data, field):
            problems.append(f"field '{field}': missing")
        else:
            problems += _check_messages(data[field], field, last_assistant=True)
    if problems:
        return problems
    explicit = split_implicit_prompt(data)
    if not explicit["prompt"]:
        return ["field 'prompt': missing, and 'chosen'/'rejected' share no leading messages"]
    for field in ("chosen", "rejected"):
        k = len(explicit["prompt"])
        for i, message in enumerate(explicit[field], start=k):
            if message["role"] != "assistant":
                return [(f"field '{field}[{i}]': role {message['role']!r} after the common prefix of "
                         f"{k} messages (the responses of an implicit-prompt pair must be assistant turns)")]
    return []


def _check_pairs(data: dict) -> list[str]:
    if not _present(data, "prompt"):
        return _check_implicit_pairs(data)
    return _check_fields(data, ("prompt",), ("chosen", "rejected"))


def _check_kto(data: dict) -> list[str]:
    """KTO rows, or pairs rows (converted later by ``pairs_to_kto``)."""
    if not _present(data, "label") and (_present(data, "chosen") or _present(data, "rejected")):
        return _check_pairs(data)
    problems = _check_fields(data, ("prompt",), ("completion",))
    label = data.get("label")
    if label is None:
        problems.append("field 'label': missing (KTO rows are {prompt, completion, label}; pairs rows also work)")
    elif not isinstance(label, bool):
        problems.append(f"field 'label': expected true or false, got {label!r}")
    return problems


def _check_eval(data: dict) -> list[str]:
    problems = _check_text_or_messages(data, "prompt", response=False)
    answer, row_id = data.get("answer"), data.get("id")
    if answer is not None and not isinstance(answer, (str, int, float)):
        problems.append(f"field 'answer': expected a string or number, got {type(answer).__name__}")
    if row_id is not None and not isinstance(row_id, (str, int)):
        problems.append(f"field 'id': expected a string or integer, got {type(row_id).__name__}")
    return problems


CHECKS = {"sft": _check_sft, "pairs": _check_pairs, "kto": _check_kto, "eval": _check_eval}


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


def _explicit(row: Row, kind: str) -> Row:
    """Implicit-prompt pairs rows in explicit form; every other row as it is."""
    is_pair = kind == "pairs" or (kind == "kto" and not _present(row.data, "label"))
    if is_pair and not _present(row.data, "prompt"):
        return Row(row.source, row.line, split_implicit_prompt(row.data))
    return row


def load_rows(uri: str, kind: str) -> list[Row]:
    """Load every row of ``uri`` and check it against ``kind`` ("sft", "pairs", "kto" or "eval").

    Raises one DataError listing the problems (file:line: field: what) if any
    row is malformed; rows are never dropped silently.  Implicit-prompt pairs
    come back in explicit form (``split_implicit_prompt``).
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
    return [_explicit(row, kind) for row in rows]


def pairs_to_kto(rows: list[Row]) -> list[Row]:
    """KTO rows from ``kto``-kind rows: a pair becomes two rows, KTO rows stay as they are.

    As TRL's ``unpair_preference_dataset``: ``chosen`` gives ``{prompt,
    completion: chosen, label: true}`` and ``rejected`` gives ``{..., label:
    false}``, both keeping the pair's ``source:line``.  Other fields of a pair
    are not carried over.
    """
    out = []
    for row in rows:
        data = row.data
        if _present(data, "label"):
            out.append(row)
            continue
        for field, label in (("chosen", True), ("rejected", False)):
            out.append(Row(row.source, row.line, {"prompt": data["prompt"], "completion": data[field], "label": label}))
    return out


def weight_problems(row: Row, field: str) -> list[str]:
    """Problems of an IW-SFT weight: ``row.data[field]`` must be a finite number > 0.

    Zero is refused too: the loop self-normalizes log-weights over a step, and a
    step of zero weights has no normalization (drop such rows from the file instead).
    """
    value = row.data.get(field)
    if value is None:
        return [f"{row.where}: field '{field}': missing (method.weight_field names the per-row weight)"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return [f"{row.where}: field '{field}': expected a finite number > 0, got {value!r}"]
    return []


def check_weights(rows: list[Row], field: str) -> None:
    """Raise one DataError naming every row whose weight ``field`` is missing or invalid."""
    problems = [p for row in rows for p in weight_problems(row, field)]
    if problems:
        _raise_problems(rows[0].source, problems)


def fingerprint(uri: str) -> str:
    """A 16-hex-digit content hash: sha256 of the file's bytes, or the toy dataset's own fingerprint."""
    if uri.startswith(TOY_PREFIX):
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
