"""Suite ``single``: each answer graded 1-10 by the judge; mean score with a CI, overall and per category.

Single-turn items use ``judges.prompts.SINGLE``, multi-turn ones (``turns``)
``SINGLE_MULTI``; a ``reference`` makes either reference-guided.  A reply
without a valid ``[[N]]`` is retried by the client (``valid=`` is the parser)
and then counted in ``errors``: the row stays, with ``score`` None, and is
left out of the means.
"""

from __future__ import annotations

from collections.abc import Sequence

from judges.judged import Call, Judged, provenance, run_calls
from judges.pairwise import as_turns, item_turns
from judges.parse import parse_single
from judges.prompts import SINGLE, SINGLE_MULTI, single_messages, single_multi_messages
from judges.stats.intervals import clustered_mean_with_ci, clustered_standard_error


def single_call(item: dict) -> tuple[Call, list[str]]:
    """The grading request of one item and the answer texts the parser must ignore."""
    turns, answers = item_turns(item), as_turns(item["answer"])
    if len(answers) != len(turns):
        raise ValueError(f"item {item.get('id')!r}: {len(turns)} user turns but {len(answers)} answers")
    ref = item.get("reference") or None
    if len(turns) == 1:
        messages = single_messages(turns[0], answers[0], ref)
    else:
        messages = single_multi_messages(turns, answers, ref)
    return Call(messages, lambda reply: parse_single(reply.text, answers) is not None), answers


def single_judge(client, items: Sequence[dict], *, confidence: float = 0.95) -> Judged:
    """Grade every item once.

    Args:
        client: a JudgeClient.
        items: dicts with ``id``; ``question`` / ``prompt`` (one turn) or ``turns``;
            ``answer`` (string or messages, or one string per turn); optional
            ``reference`` (one per turn) and ``category`` (default "all").
        confidence: level of the Student-t intervals (``judges.stats.intervals.mean_with_ci``).
    Returns:
        Judged: metrics n, errors, mean_score, mean_score_low, mean_score_high, mean_score_se
        (clustered by item id: rows that share an id are samples of one prompt), and per
        category ``<category>/mean_score`` (+ ``_low``/``_high`` when defined); one
        judgment per item: id, category, score (None on error), judge_text, provenance.
    """
    built = [single_call(item) for item in items]
    replies = run_calls(client, [call for call, _ in built])
    rows = []
    for item, (_, answers), reply in zip(items, built, replies):
        score = parse_single(reply.text, answers) if reply else None
        row = {"id": item.get("id"), "category": item.get("category") or "all", "score": score,
               "judge_text": reply.text if reply else None, "error": score is None}
        row.update(provenance(client, SINGLE if len(answers) == 1 else SINGLE_MULTI))
        rows.append(row)
    return Judged(score_metrics(rows, confidence), rows)


def score_metrics(rows: Sequence[dict], confidence: float = 0.95, prefix: str = "") -> dict[str, float]:
    """n, errors, the mean score with its interval and SE, and the same per category.

    Rows that share an ``id`` are samples of one prompt: the SE and the t-interval
    (G - 1 degrees of freedom, G prompts) are clustered by prompt
    (``judges.stats.intervals.clustered_mean_with_ci``); with one row per prompt they are
    the plain Student-t ones.  ``prefix`` goes before every metric name (MT-Bench's ``turn1/``)."""
    graded = [r for r in rows if r["score"] is not None]
    metrics = {f"{prefix}n": float(len(rows)), f"{prefix}errors": float(len(rows) - len(graded))}
    if not graded:
        return metrics
    metrics.update(_clustered_metrics(f"{prefix}mean_score", graded, confidence))
    for category in dict.fromkeys(r["category"] for r in graded):
        chosen = [r for r in graded if r["category"] == category]
        metrics.update(_clustered_metrics(f"{prefix}{category}/mean_score", chosen, confidence))
    return metrics


def _clustered_metrics(name: str, rows: Sequence[dict], confidence: float) -> dict[str, float]:
    scores = [float(r["score"]) for r in rows]
    ids = [("row", k) if r["id"] is None else r["id"] for k, r in enumerate(rows)]  # no id: its own prompt
    out = _ci_metrics(name, clustered_mean_with_ci(scores, ids, confidence))
    se = clustered_standard_error(scores, ids)
    if se is not None:
        out[f"{name}_se"] = se
    return out


def _ci_metrics(name: str, ci) -> dict[str, float]:
    out = {name: float(ci.mean)}
    if ci.low is not None:
        out[f"{name}_low"], out[f"{name}_high"] = float(ci.low), float(ci.high)
    return out
