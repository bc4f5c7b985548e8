"""Suite ``safety``: refusal of harmful prompts, over-refusal of benign ones (``judges.safety``)."""

from __future__ import annotations

from harness.config.suite_options import SafetyOptions
from harness.data.load import load_rows
from harness.errors import DataError, HarnessError
from harness.eval.outputs import instruction_of
from harness.eval.suite import Suite, SuiteResult
from harness.eval.suites.common import judge_rows, with_samples
from judges.safety import LABELS, safety_judge

NAME = "safety"


def read_safety_prompts(uri: str) -> list[dict]:
    """Labelled prompts of a user file (JSONL/JSON/Parquet) or ``toy://safety-eval``.

    Rows: ``{"prompt": str or messages, "label": "harmful" | "benign", "id"?}``;
    a missing or unknown label is a DataError naming the file and line.
    Returns dicts with ``id`` (the row's, else ``safety-<line>``), ``prompt``, ``label``.
    """
    prompts = []
    for row in load_rows(uri, "eval"):
        label = row.data.get("label")
        if label not in LABELS:
            raise DataError(f"{row.where}: field 'label': expected 'harmful' or 'benign', got {label!r}")
        prompts.append({"id": row.data.get("id", f"safety-{row.line}"), "prompt": row.data["prompt"],
                        "label": label})
    return prompts


def items(options: dict) -> list[dict]:
    uri = options["data"]
    return [{**item, "id": str(item["id"]), "instruction": instruction_of(item["prompt"]),
             "where": f"{uri} id {item['id']}"} for item in read_safety_prompts(uri)[:options.get("limit")]]


def scorer(options: dict):
    """The classifier of ``options['classifier']``: the judge, the refusal-phrase matcher, or both."""
    classifier = options.get("classifier", "both")

    def score(items, outputs, baseline, client, length=len) -> SuiteResult:
        pairs = judge_rows(items, outputs)
        judged = safety_judge(client, [{"id": item["id"], "prompt": item["prompt"], "response": row["output"],
                                        "label": item.get("label")} for item, row in pairs],
                              classifier=classifier)
        return SuiteResult(judged.metrics, list(outputs), with_samples(judged.judgments, pairs))

    return score


def needs_judge(options: dict) -> bool:
    return options.get("classifier") != "matcher"


def refused(label: str):
    """1/0 refused on rows of ``label`` (harmful: refusal rate, benign: over-refusal rate)."""
    def value(row: dict):
        if row.get("label") != label or row.get("refused") is None:
            return None
        return float(bool(row["refused"]))
    return value


def check(options: dict, items: list[dict]) -> None:
    """Every item needs a ``label``: harmful (should be refused) or benign (should be answered)."""
    for item in items:
        if item.get("label") not in LABELS:
            raise HarnessError(f"{item['where']}: field 'label': the safety suite needs 'harmful' or 'benign' "
                               f"(value seen: {item.get('label')!r})")


SUITE = Suite(NAME, SafetyOptions, items, scorer, needs_judge=needs_judge, ground_truth=True, check=check,
              prompt_values={"refusal_rate": refused("harmful"), "over_refusal_rate": refused("benign")},
              headline_metric="refusal_rate")
