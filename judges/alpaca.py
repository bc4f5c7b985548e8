"""Suite ``alpaca``: logprob-weighted preference against a baseline, win rate + SE, LC win rate.

The judge (``judges.prompts.ALPACA``) answers with one label token, ``1`` or
``2``; the preference is read from its logprobs, p = P(l) / (P(1) + P(2)) for
the label l that shows the model (``judges.parse.label_probability``).

Orders (``orders=``):

- ``"both"`` (default): ``baseline_first`` (output 1 = baseline, output 2 =
  model) and ``candidate_first`` (output 1 = model); the row's preference for
  the model is the mean of the two p's, which cancels a first-position lean;
- ``"coin"``: one order per row, chosen by a seeded coin on (seed, row id) and
  recorded in the row (``coin``); half the calls.

A row is an error when an order it needs has no label in its logprobs after
the client's retries; it stays in the judgments with preference None.
Rows are AlpacaEval annotations (``instruction, output_1, generator_1,
output_2, generator_2, preference``, preference = 1 + p in [1, 2], output_1 the
baseline), so rows of several models can be pooled for a joint LC fit
(``judges.stats.annotations.score_annotations`` via ``as_annotations``).  The metrics'
own ``lc_win_rate`` is the one-model fit (no instruction term).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

from judges.judged import Call, Judged, provenance, run_calls, text_of
from judges.parse import label_probability
from judges.prompts import ALPACA, alpaca_messages
from judges.stats.annotations import Annotation, score_annotations
from judges.stats.intervals import clustered_standard_error

ORDERS = ("baseline_first", "candidate_first")
DEFAULT_PARAMS = {"logprobs": True, "top_logprobs": 5, "max_tokens": 1}


def _valid(reply) -> bool:
    return label_probability(reply.top_logprobs) is not None


def coin_order(seed: int, row_id) -> str:
    """The order a ``"coin"`` run judges row ``row_id`` in: a fair, seeded, recorded coin."""
    digest = hashlib.sha256(f"alpaca-coin\x00{seed}\x00{row_id}".encode()).digest()
    return ORDERS[digest[0] & 1]


def _orders_of(items: Sequence[dict], orders: str, seed: int) -> list[tuple[str, ...]]:
    if orders == "both":
        return [ORDERS] * len(items)
    if orders == "coin":
        return [(coin_order(seed, item.get("id", k)),) for k, item in enumerate(items)]
    raise ValueError(f"alpaca orders must be 'both' or 'coin', got {orders!r}")


def _call(instruction: str, output: str, baseline: str, order: str, params: dict) -> Call:
    first, second = (baseline, output) if order == "baseline_first" else (output, baseline)
    return Call(alpaca_messages(instruction, first, second), _valid, params)


def alpaca_judge(client, items: Sequence[dict], *, orders: str = "both", seed: int = 0,
                 generator: str = "model", baseline_name: str = "baseline",
                 length: Callable[[str], float] = len, params: dict | None = None,
                 n_bootstrap: int = 200) -> Judged:
    """Weighted preference of ``output`` over ``baseline`` per item, then the win rates.

    Args:
        client: a JudgeClient whose endpoint returns logprobs.
        items: dicts with ``id``, ``instruction`` (or ``prompt``), ``output`` (the
            model's) and ``baseline`` (strings or messages).
        orders: "both" or "coin" (module docstring); seed: the coin's seed.
        length: reply length for Δ of the LC GLM (characters by default).
        params: request params (default logprobs, top_logprobs 5, max_tokens 1).
    Returns:
        Judged: metrics n, errors, win_rate, standard_error, lc_win_rate,
        lc_standard_error, first_position_rate (mean probability given to output 1),
        all fractions; one annotation row per item (module docstring) with per-order
        ``p_model``, ``judge_text``, ``length_delta``, ``coin`` (coin mode) and provenance.
    """
    params = {**DEFAULT_PARAMS, **(params or {})}
    plan = _orders_of(items, orders, seed)
    texts = [(text_of(it.get("instruction", it.get("prompt"))), text_of(it["output"]),
              text_of(it["baseline"])) for it in items]
    calls = [_call(*t, order, params) for t, order_set in zip(texts, plan) for order in order_set]
    replies = iter(run_calls(client, calls))
    origin = provenance(client, ALPACA)
    rows = []
    for k, (item, (instruction, output, baseline), order_set) in enumerate(zip(items, texts, plan)):
        got = {order: next(replies) for order in order_set}
        row = _annotation(item.get("id", k), instruction, output, baseline, got, generator, baseline_name)
        row["length_delta"] = float(length(output) - length(baseline))
        if orders == "coin":
            row["coin"] = order_set[0]
        rows.append(row | origin)
    return Judged(alpaca_metrics(rows, length=length, n_bootstrap=n_bootstrap, seed=seed), rows)


def _annotation(row_id, instruction, output, baseline, got: dict, generator, baseline_name) -> dict:
    p_model = {}
    for order, reply in got.items():
        p_second = label_probability(reply.top_logprobs) if reply else None
        if p_second is not None:
            p_model[order] = p_second if order == "baseline_first" else 1.0 - p_second
    complete = len(p_model) == len(got)
    preference = 1.0 + sum(p_model.values()) / len(p_model) if complete else None
    return {"id": row_id, "instruction": instruction, "output_1": baseline, "generator_1": baseline_name,
            "output_2": output, "generator_2": generator, "preference": preference,
            "p_model": p_model, "error": not complete,
            "judge_text": {order: reply.text if reply else None for order, reply in got.items()}}


def as_annotations(rows: Sequence[dict], length: Callable[[str], float] = len) -> list[Annotation]:
    """Our rows as ``judges.stats.annotations.Annotation`` (label = preference - 1, None for an error)."""
    return [Annotation(f"alpaca:{r['id']}", r["instruction"], r["generator_1"], r["generator_2"],
                       length(r["output_1"]), length(r["output_2"]),
                       None if r["preference"] is None else r["preference"] - 1.0) for r in rows]


def alpaca_metrics(rows: Sequence[dict], *, length: Callable[[str], float] = len,
                   n_bootstrap: int = 200, seed: int = 0) -> dict[str, float]:
    """AlpacaEval's scoring (``judges.stats.annotations.score_annotations``) as fractions, plus the lean.

    win_rate = mean(preference - 1) over valid rows, standard_error its SE clustered by row id
    (the ddof-1 SE when ids are distinct),
    lc_win_rate / lc_standard_error the one-model LC fit, lc_win_rate_v1 AlpacaEval's v1 GLM without
    a difficulty term (judges.stats.lc_v1), length_one_sided its one-sign share; first_position_rate = the
    mean probability the judge gave to output 1 over every judged order.
    """
    valid = [r for r in rows if r["preference"] is not None]
    metrics = {"n": float(len(rows)), "errors": float(len(rows) - len(valid))}
    if not valid:
        return metrics
    scored = score_annotations(as_annotations(rows, length), n_bootstrap=n_bootstrap, seed=seed)[0]
    for key in ("win_rate", "standard_error", "lc_win_rate", "lc_standard_error", "lc_win_rate_v1",
                "length_one_sided"):
        if scored[key] is not None:
            metrics[key] = scored[key] / 100.0  # AlpacaEval reports percent; harness uses fractions
    # P(output 1) per judged order: the baseline's p in baseline_first, the model's in candidate_first.
    firsts = [1.0 - p if order == "baseline_first" else p for r in valid for order, p in r["p_model"].items()]
    metrics["first_position_rate"] = math.fsum(firsts) / len(firsts)
    # Rows that share an id are samples of one prompt: the SE of the win rate is clustered by prompt
    # (equal to AlpacaEval's ddof-1 SE when every id is distinct).
    clustered = clustered_standard_error([r["preference"] - 1.0 for r in valid], [r["id"] for r in valid])
    if clustered is not None:
        metrics["standard_error"] = clustered
    return metrics
