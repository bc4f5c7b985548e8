"""What several suites share: the plain prompt-file loader and the pairing of outputs with items."""

from __future__ import annotations

from harness.data.load import load_rows
from harness.errors import HarnessError
from harness.eval.outputs import instruction_of


def eval_items(options: dict) -> list[dict]:
    """The first ``options['limit']`` rows of ``options['data']`` as items: the row's fields plus
    ``id`` (str; the row's, else its index), ``instruction`` and ``where``."""
    rows = load_rows(options["data"], "eval")[:options.get("limit")]
    return [{**r.data, "id": str(r.data.get("id", i)), "instruction": instruction_of(r.data["prompt"]),
             "where": r.where} for i, r in enumerate(rows)]


def grouped(items: list[dict], outputs: list[dict]) -> list[tuple[dict, list[dict]]]:
    """(item, its output rows) for every item that has outputs, in item order."""
    rows: dict[str, list[dict]] = {}
    for row in outputs:
        rows.setdefault(str(row["id"]), []).append(row)
    return [(item, rows[item["id"]]) for item in items if item["id"] in rows]


def judge_rows(items: list[dict], outputs: list[dict]) -> list[tuple[dict, dict]]:
    """(item, output row) for every output row: each sample is judged as its own prompt."""
    return [(item, row) for item, rows in grouped(items, outputs) for row in rows]


def user_side(item: dict) -> dict:
    """What a judge sees of the user: the turns (multi-turn) or the prompt, and the item's reference."""
    side = {"turns": item["turns"]} if "turns" in item else {"prompt": item["prompt"]}
    return {**side, "id": item["id"], "category": item.get("category"), "reference": item.get("reference")}


def with_samples(judgments: list[dict], pairs: list[tuple[dict, dict]]) -> list[dict]:
    """Judgment rows with the sample index and generator of the output row each judged."""
    for row, (_, out) in zip(judgments, pairs):
        row["sample"] = out.get("sample", 0)
        row["generator"] = out.get("generator")
    return judgments


def check_baseline(pairs: list[tuple[dict, dict]], baseline: dict) -> None:
    """Every judged item needs the baseline's output."""
    missing = [item["id"] for item, _ in pairs if item["id"] not in baseline]
    if missing:
        raise HarnessError(f"the baseline has no output for {len(missing)} prompt(s) (first: {missing[:5]})")

