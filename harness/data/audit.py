"""``harness audit DATA``: a preference-data audit to run before training.

It reports what is known to bias or spoil preference training:
- length bias: mean chosen and rejected response tokens, and the share of
  pairs whose chosen response is longer (or shorter, or equal);
- identical pairs (chosen == rejected) and near-identical ones (word-trigram
  Jaccard of the two responses >= the threshold);
- prompt/template prefix mismatches after tokenizing with the model's
  tokenizer (TRL's rule; ``harness.data.tokenization``);
- exact duplicate rows, and near-duplicate rows (``data.filter.dedup: near``'s rule);
- train/eval contamination: eval prompts whose word-trigram Jaccard with some
  training prompt is >= the threshold (``harness.data.similarity``);
- token-length distributions (P50 / P90 / P95 / max) of prompts and responses.

The same report is logged by a sweep stage that trains on pairs, as the
artifact ``audit.json`` and a few ``data/audit/*`` metrics.
"""

from __future__ import annotations

import json

import numpy as np

from harness.data.filters import drop_exact_duplicates, drop_near_duplicates, row_text
from harness.data.load import Row, load_rows, read_rows
from harness.data.similarity import NearIndex, jaccard, shingles
from harness.data.tokenization import EncodedPair, encode_pairs
from harness.errors import DataError

DEFAULT_MODEL = "toy://tiny"
EXAMPLES_SHOWN = 5


def percentiles(values: list[int]) -> dict[str, float]:
    """P50, P90, P95 (linear interpolation, numpy's default) and max of ``values``."""
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p95": 0.0, "max": 0.0}
    p50, p90, p95 = np.percentile(np.asarray(values, dtype=float), [50, 90, 95])
    return {"p50": float(p50), "p90": float(p90), "p95": float(p95), "max": float(max(values))}


def length_bias(pairs: list[EncodedPair]) -> dict[str, float]:
    """Mean response tokens of chosen and rejected, and the shares of pairs by which is longer."""
    chosen = np.array([len(p.chosen_ids) for p in pairs], dtype=float)
    rejected = np.array([len(p.rejected_ids) for p in pairs], dtype=float)
    n = max(len(pairs), 1)
    return {
        "chosen_mean": float(chosen.mean()) if len(pairs) else 0.0,
        "rejected_mean": float(rejected.mean()) if len(pairs) else 0.0,
        "chosen_longer": float((chosen > rejected).sum() / n),
        "rejected_longer": float((chosen < rejected).sum() / n),
        "equal": float((chosen == rejected).sum() / n),
    }


def pair_similarity(rows: list[Row], threshold: float) -> dict[str, int]:
    """Pairs whose responses are identical, and those near-identical (Jaccard >= threshold) but not equal."""
    identical = near = 0
    for row in rows:
        chosen, rejected = row_text({"chosen": row.data["chosen"]}), row_text({"chosen": row.data["rejected"]})
        if row.data["chosen"] == row.data["rejected"]:
            identical += 1
        elif jaccard(shingles(chosen), shingles(rejected)) >= threshold:
            near += 1
    return {"identical_pairs": identical, "near_identical_pairs": near}


def contamination(train: list[Row], held_out: list[Row], threshold: float) -> dict:
    """Eval items whose prompt has word-trigram Jaccard >= threshold with a training prompt."""
    index = NearIndex(threshold)
    train_sets = [shingles(row_text({"prompt": row.data["prompt"]})) for row in train]
    for s, keys in zip(train_sets, index.keys_many(train_sets)):
        index.add(s, keys)
    eval_sets = [shingles(row_text({"prompt": row.data["prompt"]})) for row in held_out]
    found = []
    for row, s, keys in zip(held_out, eval_sets, index.keys_many(eval_sets)):
        matches = index.matches(s, keys)
        if matches:
            position, score = max(matches, key=lambda m: m[1])
            found.append({"eval": row.where, "train": train[position].where, "jaccard": round(score, 4)})
    return {"eval_rows": len(held_out), "contaminated": len(found),
            "share": len(found) / max(len(held_out), 1), "examples": found[:EXAMPLES_SHOWN]}


def audit_rows(rows: list[Row], pairs: list[EncodedPair], prefix_mismatch: int, threshold: float,
               held_out: list[Row] | None = None) -> dict:
    """The audit report of pairs ``rows`` and their encoded ``pairs`` (same data, tokenized)."""
    report = {
        "rows": len(rows),
        "threshold": threshold,
        "length": length_bias(pairs),
        **pair_similarity(rows, threshold),
        "prefix_mismatch": prefix_mismatch,
        "duplicates": drop_exact_duplicates(rows)[1],
        "near_duplicates": drop_near_duplicates(rows, threshold)[1],
        "tokens": {
            "prompt": percentiles([len(p.prompt_ids) for p in pairs]),
            "chosen": percentiles([len(p.chosen_ids) for p in pairs]),
            "rejected": percentiles([len(p.rejected_ids) for p in pairs]),
        },
    }
    if held_out is not None:
        report["contamination"] = contamination(rows, held_out, threshold)
    return report


def foreign_prompt(data: dict) -> str | None:
    """The prompt text of an eval row in another tool's format: AlpacaEval's ``instruction``, or the
    ``turns`` of a FastChat MT-Bench question (all turns, one per line); None for neither."""
    if isinstance(data.get("instruction"), str) and data["instruction"].strip():
        return data["instruction"]
    turns = data.get("turns")
    if isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns):
        return "\n".join(turns)
    return None


def load_eval_prompts(uri: str) -> list[Row]:
    """Rows with a ``prompt``: eval-prompt files, pairs (implicit prompts made explicit), or the
    prompt files of AlpacaEval (``instruction``) and FastChat (``question_id, turns``)."""
    try:
        return load_rows(uri, "eval")
    except DataError as not_eval:
        try:
            return load_rows(uri, "pairs")
        except DataError:
            pass
        rows = read_rows(uri)
        prompts = [foreign_prompt(row.data) for row in rows]
        if not rows or None in prompts:
            raise not_eval from None
        return [Row(row.source, row.line, {"prompt": text}) for row, text in zip(rows, prompts)]


def audit_data(uri: str, tokenizer, eval_uri: str | None = None, threshold: float = 0.8) -> dict:
    """Load pairs data, tokenize it untruncated by TRL's rule, and audit it."""
    rows = load_rows(uri, "pairs")
    pairs, stats = encode_pairs(tokenizer, rows, max_length=10**9)
    report = audit_rows(rows, pairs, stats.prefix_mismatch, threshold,
                        load_eval_prompts(eval_uri) if eval_uri else None)
    report["empty_responses"] = stats.dropped  # no token after the prompt: nothing to learn from
    return report


def audit_metrics(report: dict) -> dict[str, float]:
    """The few ``data/audit/*`` numbers a sweep logs next to ``audit.json``."""
    metrics = {
        "data/audit/chosen_longer": report["length"]["chosen_longer"],
        "data/audit/chosen_tokens_mean": report["length"]["chosen_mean"],
        "data/audit/rejected_tokens_mean": report["length"]["rejected_mean"],
        "data/audit/identical_pairs": report["identical_pairs"],
        "data/audit/near_identical_pairs": report["near_identical_pairs"],
        "data/audit/near_duplicates": report["near_duplicates"],
    }
    if "contamination" in report:
        metrics["data/audit/contaminated"] = report["contamination"]["contaminated"]
    return metrics


def _dist(d: dict) -> str:
    return " / ".join(f"{d[k]:g}" for k in ("p50", "p90", "p95", "max"))


def format_table(report: dict, title: str) -> str:
    """The report as an aligned two-column text table."""
    n, t, length = report["rows"], report["threshold"], report["length"]
    lines = [
        ("pairs", f"{n}"),
        ("chosen / rejected tokens (mean)", f"{length['chosen_mean']:.1f} / {length['rejected_mean']:.1f}"),
        ("chosen longer / shorter / equal",
         f"{length['chosen_longer']:.1%} / {length['rejected_longer']:.1%} / {length['equal']:.1%}"),
        ("identical pairs", f"{report['identical_pairs']}"),
        (f"near-identical pairs (J >= {t:g})", f"{report['near_identical_pairs']}"),
        ("prompt/template prefix mismatches", f"{report['prefix_mismatch']}"),
        ("exact duplicate rows", f"{report['duplicates']}"),
        (f"near-duplicate rows (J >= {t:g}, incl. exact)", f"{report['near_duplicates']}"),
    ]
    if "contamination" in report:
        c = report["contamination"]
        share = f"{c['contaminated']} / {c['eval_rows']} ({c['share']:.1%})"
        lines.append((f"eval items contaminated (J >= {t:g})", share))
    for field in ("prompt", "chosen", "rejected"):
        lines.append((f"{field} tokens P50 / P90 / P95 / max", _dist(report["tokens"][field])))
    width = max(len(k) for k, _ in lines)
    body = [f"{k:<{width}}  {v}" for k, v in lines]
    if report.get("contamination", {}).get("examples"):
        body += ["", "contaminated eval items (eval ~ train):"]
        body += [f"  {e['eval']} ~ {e['train']} (J = {e['jaccard']:g})" for e in report["contamination"]["examples"]]
    return "\n".join([title, *body])


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True)
