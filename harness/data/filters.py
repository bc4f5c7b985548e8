"""Data-quality filters (``data.filter.*``): identical pairs, exact and near duplicates, length bounds.

Each filter is a pure function returning the kept items and how many it
dropped; the counts are logged as ``data/filtered_*`` so no row disappears
silently.  Near-duplicates are rows whose text (every prompt and response
field, message contents joined) has a word-trigram Jaccard similarity of at
least ``near_threshold`` with an earlier kept row (``harness.data.similarity``).
"""

from __future__ import annotations

import hashlib
import json

from harness.data.load import Row
from harness.data.similarity import near_duplicate_positions

RESPONSE_FIELDS = ("chosen", "rejected", "completion", "messages", "text")


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def drop_identical_pairs(rows: list[Row]) -> tuple[list[Row], int]:
    """Pairs whose chosen and rejected are equal carry no preference signal."""
    kept = [r for r in rows if "chosen" not in r.data or _canonical(r.data["chosen"]) != _canonical(r.data["rejected"])]
    return kept, len(rows) - len(kept)


def drop_exact_duplicates(rows: list[Row]) -> tuple[list[Row], int]:
    """Keep the first of rows whose prompt and responses (and KTO label) are identical."""
    seen, kept = set(), []
    for row in rows:
        key = hashlib.sha256(_canonical({k: row.data.get(k) for k in ("prompt", *RESPONSE_FIELDS, "label")}).encode())
        digest = key.hexdigest()
        if digest not in seen:
            seen.add(digest)
            kept.append(row)
    return kept, len(rows) - len(kept)


def _field_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(m.get("content", "") for m in value if isinstance(m, dict))
    return ""


def row_text(data: dict) -> str:
    """The text of a row for similarity: prompt, then every response field, message contents joined."""
    return "\n".join(_field_text(data.get(k)) for k in ("prompt", *RESPONSE_FIELDS) if data.get(k) is not None)


def drop_near_duplicates(rows: list[Row], threshold: float) -> tuple[list[Row], int]:
    """Keep the first of rows whose texts have word-trigram Jaccard >= ``threshold`` (exact duplicates too)."""
    dropped = set(near_duplicate_positions((row_text(r.data) for r in rows), threshold))
    return [r for i, r in enumerate(rows) if i not in dropped], len(dropped)


def response_lengths(example) -> list[int]:
    """Response token counts of an encoded SFT example, pair or KTO example.

    For a multi-turn conversation, the count is of its target (assistant) tokens.
    """
    if hasattr(example, "chosen_ids"):
        return [len(example.chosen_ids), len(example.rejected_ids)]
    if hasattr(example, "completion_ids"):
        return [len(example.completion_ids)]
    return [sum(example.target_mask)]


def within_length(examples: list, min_length: int | None, max_length: int | None) -> tuple[list, int]:
    """Keep examples whose every response has min_length <= tokens <= max_length."""
    lo, hi = min_length or 0, max_length if max_length is not None else float("inf")
    kept = [e for e in examples if all(lo <= n <= hi for n in response_lengths(e))]
    return kept, len(examples) - len(kept)


def filter_rows(rows: list[Row], config, kind: str) -> tuple[list[Row], dict[str, int]]:
    """Apply the row-level filters of ``data.filter`` (before tokenization)."""
    counts = {}
    if kind in ("pairs", "kto") and config.drop_identical_pairs:
        rows, counts["data/filtered_identical_pairs"] = drop_identical_pairs(rows)
    if config.dedup == "exact":
        rows, counts["data/filtered_duplicates"] = drop_exact_duplicates(rows)
    elif config.dedup == "near":
        rows, counts["data/filtered_near_duplicates"] = drop_near_duplicates(rows, config.near_threshold)
    return rows, counts
