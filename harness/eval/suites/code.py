"""Suite ``code``: candidate programs run against each item's tests in the sandbox; unbiased pass@k
(``judges.code``).

Items are rows ``{id, prompt, tests, entry_point?}`` of a code eval file
(JSONL/JSON/Parquet) or the shipped ``toy://code-eval``; HumanEval's ``task_id``
and ``test`` are accepted as the names of ``id`` and ``tests``.  With
``entry_point`` the tests must define ``check(candidate)``.
"""

from __future__ import annotations

import re

from harness.config.suite_options import CodeOptions
from harness.data.load import Row, load_rows
from harness.errors import DataError, HarnessError
from harness.eval.outputs import instruction_of
from harness.eval.suite import Suite, SuiteResult, never
from harness.eval.suites.common import grouped
from judges.code import score_code_outputs
from judges.sandbox.runner import check_isolation

NAME = "code"
DEFAULT_DATA = "toy://code-eval"
SANDBOX_KEYS = ("k", "timeout_s", "memory_mb", "unsafe", "concurrency")

_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")


def code_item(row: Row, index: int) -> dict:
    """One validated item ``{id, prompt, tests, entry_point}`` from a data row."""
    data = row.data
    tests = data.get("tests", data.get("test"))
    if not isinstance(tests, str) or not tests.strip():
        raise DataError(f"{row.where}: field 'tests': the code suite needs test code as a non-empty "
                        f"string (value seen: {tests!r})")
    entry = data.get("entry_point")
    if entry is not None and (not isinstance(entry, str) or not _IDENTIFIER.match(entry)):
        raise DataError(f"{row.where}: field 'entry_point': expected a Python identifier "
                        f"(value seen: {entry!r})")
    if entry is not None and "def check" not in tests:
        raise DataError(f"{row.where}: field 'tests': with entry_point {entry!r} the tests must "
                        f"define check(candidate)")
    item_id = data.get("id", data.get("task_id", index))
    return {"id": str(item_id), "prompt": data["prompt"], "tests": tests, "entry_point": entry}


def load_code_items(uri: str | None = None, limit: int | None = None) -> list[dict]:
    """The items of a code eval file (JSONL/JSON/Parquet) or ``toy://code-eval`` (the default)."""
    rows = load_rows(uri or DEFAULT_DATA, "eval")
    found = [code_item(row, i) for i, row in enumerate(rows)]
    seen: dict[str, Row] = {}
    for row, item in zip(rows, found):
        if item["id"] in seen:
            raise DataError(f"{row.where}: field 'id': duplicate id {item['id']!r} "
                            f"(first at {seen[item['id']].where})")
        seen[item["id"]] = row
    return found[:limit] if limit is not None else found


def items(options: dict) -> list[dict]:
    """The items of ``options['data']`` (null: the shipped code eval set), with ``instruction`` and ``where``."""
    uri = DEFAULT_DATA if options.get("data") is None else options["data"]
    return [{**item, "instruction": instruction_of(item["prompt"]), "where": f"{uri} id {item['id']}"}
            for item in load_code_items(uri, options.get("limit"))]


def scorer(options: dict):
    """Every sample of every item through the sandbox, with the sandbox options of ``options``."""
    sandbox = {k: options[k] for k in SANDBOX_KEYS if k in options}

    def score(items, outputs, baseline, client, length=len) -> SuiteResult:
        found = grouped(items, outputs)
        if not found:
            raise HarnessError(f"{NAME}: no outputs to score")
        metrics, judgments = score_code_outputs([item for item, _ in found],
                                                [[r["output"] for r in rows] for _, rows in found], sandbox)
        return SuiteResult(metrics, list(outputs), judgments)

    return score


def check(options: dict, items: list[dict]) -> None:
    """Refuse before training, not after, when the sandbox cannot isolate (and ``unsafe`` is off)."""
    check_isolation(options["unsafe"])


SUITE = Suite(NAME, CodeOptions, items, scorer, needs_judge=never, ground_truth=True, check=check,
              primary_metric="pass_at_1")
