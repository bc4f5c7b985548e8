"""Suite ``pairwise``: a candidate against a baseline, judged in BOTH orders, every prompt.

Orders (the names of ``judges.stats.winrate``):

- ``candidate_first``: answer A is the candidate, answer B the baseline (the
  original order);
- ``baseline_first``: answer A is the baseline, answer B the candidate.

An order whose reply has no parseable verdict is retried by the client (its
``valid=`` hook is the parser) up to ``judge.max_retries`` times; if it still
has none the prompt is an ``error``: kept as a row, counted, never dropped.
Aggregation (wins, ties, losses, errors, win_rate, position_consistency,
first_position_rate, standard_error) and the length-bias report are
``judges.stats.winrate``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from judges.judged import Call, Judged, provenance, run_calls, text_of
from judges.parse import parse_pairwise
from judges.prompts import PAIRWISE, PAIRWISE_MULTI, pairwise_messages, pairwise_multi_messages
from judges.stats.style import style_counts
from judges.stats.winrate import OUTCOME_SCORE, PairVerdicts, length_bias, summarize_pairs

ORDERS = ("candidate_first", "baseline_first")


def as_turns(value) -> list[str]:
    """A reply (string or message list) or a list of per-turn replies, as a list of strings."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return [text_of(value)]


def item_turns(item: dict) -> list[str]:
    """The user turns of an item: ``turns`` (multi-turn) or ``question`` / ``prompt``."""
    if item.get("turns"):
        return [str(t) for t in item["turns"]]
    return [text_of(item.get("question", item.get("prompt")))]


def pair_messages(turns: list[str], first: list[str], second: list[str],
                  reference: list[str] | None) -> list[dict]:
    """The request with ``first`` as A and ``second`` as B (single- or multi-turn template)."""
    if len(turns) == 1:
        return pairwise_messages(turns[0], first[-1], second[-1], reference)
    return pairwise_multi_messages(turns, first, second, reference)


def pairwise_calls(item: dict) -> tuple[list[Call], list[str]]:
    """The two order requests for one item, and the candidate texts the parser must ignore."""
    turns = item_turns(item)
    cand, base = as_turns(item["candidate"]), as_turns(item["baseline"])
    if len(cand) != len(turns) or len(base) != len(turns):
        raise ValueError(f"item {item.get('id')!r}: {len(turns)} user turns but {len(cand)} candidate and "
                         f"{len(base)} baseline replies")
    quoted = cand + base
    valid = lambda reply: parse_pairwise(reply.text, quoted) is not None
    ref = item.get("reference") or None
    return [Call(pair_messages(turns, cand, base, ref), valid),
            Call(pair_messages(turns, base, cand, ref), valid)], quoted


def pairwise_judge(client, items: Sequence[dict], *,
                   length: Callable[[str], float] = len) -> Judged:
    """Judge every item in both orders and aggregate.

    Args:
        client: a JudgeClient.
        items: dicts with ``id``; the user side as ``question`` / ``prompt`` (one
            turn, string or messages) or ``turns`` (list of strings); ``candidate``
            and ``baseline`` replies (string or messages, or one string per turn);
            optional ``reference`` (list of reference answers, one per turn) and
            ``category``.
        length: length of a reply for the bias report (characters by default;
            pass a token counter for ``--length-unit tokens``).  Multi-turn items
            use their last replies.
    Returns:
        Judged: metrics n, wins, ties, losses, errors, win_rate, position_consistency,
        first_position_rate, tie_rate, standard_error (clustered by item id: rows that share
        an id are samples of one prompt), length_correlation, longer_win_rate,
        mean_length_delta; one judgment per item (see ``judgment_row``).
    """
    built = [pairwise_calls(item) for item in items]
    replies = run_calls(client, [call for calls, _ in built for call in calls])
    rows, pairs, deltas = [], [], []
    for k, (item, (_, quoted)) in enumerate(zip(items, built)):
        row = judgment_row(item, replies[2 * k: 2 * k + 2], quoted, length)
        row.update(provenance(client, PAIRWISE if len(item_turns(item)) == 1 else PAIRWISE_MULTI))
        rows.append(row)
        pairs.append(PairVerdicts.from_positions(*row["verdicts"].values()))
        deltas.append(row["length_delta"])
    # Several samples of one prompt share its id: the SE is clustered by prompt.
    clusters = [("item", k) if item.get("id") is None else item["id"] for k, item in enumerate(items)]
    metrics = summarize_pairs(pairs, clusters).as_metrics() | length_bias(pairs, deltas).as_metrics()
    return Judged(metrics, rows)


def judgment_row(item: dict, replies: list, quoted: list[str], length: Callable[[str], float]) -> dict:
    """One prompt's row: per-order verdict letters and winners, raw texts, outcome and score.

    ``verdicts[order]`` is the position letter the judge gave (A, B, C, or None
    after retries); ``winners[order]`` the same in candidate/baseline/tie terms.
    ``score`` is the candidate's: win 1, tie 0.5, loss 0, None for an error.
    """
    letters = {order: parse_pairwise(r.text, quoted) if r else None for order, r in zip(ORDERS, replies)}
    pair = PairVerdicts.from_positions(letters["candidate_first"], letters["baseline_first"])
    outcome = pair.outcome
    cand, base = as_turns(item["candidate"])[-1], as_turns(item["baseline"])[-1]
    return {
        "id": item.get("id"), "category": item.get("category"),
        "verdicts": letters,
        "winners": {"candidate_first": pair.candidate_first, "baseline_first": pair.baseline_first},
        "judge_text": {order: r.text if r else None for order, r in zip(ORDERS, replies)},
        "outcome": outcome, "error": outcome == "error",
        "score": OUTCOME_SCORE.get(outcome),
        "length_delta": float(length(cand) - length(base)),
        # Length and markdown counts of both replies: the style-controlled ranking's covariates.
        "style": {"candidate": style_counts(cand, length), "baseline": style_counts(base, length)},
    }
