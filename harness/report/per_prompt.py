"""Per-prompt scores from a run's ``judgments/<suite>.jsonl`` and ``outputs/<suite>.jsonl`` artifacts.

Shapes read (DESIGN.md, "Artifacts"): every row has ``id``.  In a judgments row,

- ``scores`` as a dict ``{metric: value}`` gives that metric's per-prompt value directly;
- ``scores`` as a list of per-sample values: 0/1 lists give ``pass_at_<k>``
  (the unbiased estimator on the row's n samples and c correct), and the mean of
  the list is the per-prompt value of the suite's primary metric
  (``Suite.primary_metric``, e.g. ``win_rate`` for pairwise);
- ``score``, a number, is the per-prompt value of the primary metric
  (pairwise: win 1, tie 0.5, loss 0; single: the 1-10 grade);
- alpaca rows give ``win_rate`` as ``preference - 1``, safety rows give
  ``refusal_rate`` / ``over_refusal_rate`` from ``refused`` on harmful / benign rows
  (``Suite.prompt_values``).

Rows that share an ``id`` with distinct ``sample`` indices (or MT-Bench ``turn``s) are
samples (turns) of one prompt (``eval.generation.n > 1``): the prompt's value is their mean.
A row with ``scores`` null or empty is a prompt without a verdict (an error of
the judge) and has no per-prompt value.  Outputs rows give ``response_length``
(mean ``num_tokens`` over a prompt's samples).

A per-prompt decomposition is used only when the mean over prompts reproduces
the metric logged on the run (``reproduces``): then a paired test is a test of
the reported number, not of a look-alike.
"""

from __future__ import annotations

import math
import re

from harness.errors import DataError
from harness.eval.suites import SUITES
from judges.stats.pass_at_k import pass_at_k

_PASS_AT = re.compile(r"pass_at_(\d+)$")
TOLERANCE = 1e-6


def per_prompt_values(suite: str, metric: str, artifacts: dict[str, list[dict]],
                      where: str = "") -> dict[str, float] | None:
    """``{prompt id: value}`` of ``eval/<suite>/<metric>`` from one run's artifacts, or None if not decomposable."""
    if metric == "response_length":
        return _lengths(artifacts.get("outputs"), where)
    rows = artifacts.get("judgments")
    if not rows:
        return None
    samples: dict[str, dict[object, float | None]] = {}
    for i, row in enumerate(rows, start=1):
        value = _row_value(suite, metric, row)
        if value is _UNDEFINED:
            return None
        key = _row_id(row, f"{where}judgments/{suite}.jsonl:{i}")
        seen = samples.setdefault(key, {})
        part = (row.get("sample", 0), row.get("turn"))
        if part in seen:
            raise DataError(f"{where}judgments/{suite}.jsonl:{i}: field 'id': duplicate prompt id {key!r}"
                            f" (sample {part[0]}" + (f", turn {part[1]})" if part[1] is not None else ")"))
        seen[part] = value
    # Samples of one prompt (eval.generation.n > 1), and MT-Bench's turns, share its id: the prompt's
    # value is the mean of their values.
    out = {}
    for key, by_sample in samples.items():
        values = [v for v in by_sample.values() if v is not None]
        if values:
            out[key] = math.fsum(values) / len(values)
    return out


_UNDEFINED = object()


def _row_value(suite: str, metric: str, row: dict):
    """The row's value of ``metric``; None for a prompt without a verdict; _UNDEFINED when the shape has none."""
    record = SUITES.get(suite)  # None for a suite this version no longer has: shapes only
    if record is not None and metric in record.prompt_values:
        return record.prompt_values[metric](row)
    scores = row.get("scores", row.get("score"))
    if isinstance(scores, dict):
        value = scores.get(metric, _UNDEFINED)
        return value if value is _UNDEFINED or value is None else float(value)
    if scores is None or scores == []:
        return None
    if isinstance(scores, bool) or not isinstance(scores, (int, float, list)):
        return _UNDEFINED
    values = scores if isinstance(scores, list) else [scores]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return _UNDEFINED
    match = _PASS_AT.match(metric)
    if match and isinstance(scores, list) and set(values) <= {0, 1}:
        k = int(match.group(1))
        return pass_at_k(len(values), int(sum(values)), k) if len(values) >= k else _UNDEFINED
    if record is not None and record.primary_metric == metric:
        return math.fsum(values) / len(values)
    return _UNDEFINED


def _row_id(row: dict, where: str) -> str:
    if "id" not in row or row["id"] is None:
        raise DataError(f"{where}: field 'id': missing (every judgments/outputs row needs a prompt id)")
    return str(row["id"])


def _lengths(rows: list[dict] | None, where: str) -> dict[str, float] | None:
    """Mean ``num_tokens`` per prompt id over its samples; None when rows lack ``num_tokens``."""
    if not rows or any("num_tokens" not in r for r in rows):
        return None
    sums: dict[str, list[float]] = {}
    for i, row in enumerate(rows, start=1):
        sums.setdefault(_row_id(row, f"{where}outputs:{i}"), []).append(float(row["num_tokens"]))
    return {k: math.fsum(v) / len(v) for k, v in sums.items()}


def reproduces(values: dict[str, float], logged: float) -> bool:
    """Whether the mean over prompts equals the logged metric (to ``TOLERANCE``, relative to its size)."""
    if not values or logged is None or math.isnan(logged):
        return False
    mean = math.fsum(values.values()) / len(values)
    return abs(mean - logged) <= TOLERANCE * max(1.0, abs(logged))


def response_lengths(outputs: list[dict] | None) -> list[float]:
    """Every sample's ``num_tokens`` (for the length distribution plot); empty when not logged."""
    return [float(r["num_tokens"]) for r in outputs or [] if r.get("num_tokens") is not None]


def sampling_variance(metric: str, artifacts: dict[str, list[dict]]) -> float | None:
    """Mean over prompts of the variance of a prompt's value from its own n > 1 samples: s²_i / n_i.

    Only for a metric whose per-prompt value is the mean of a judgments row's
    ``scores`` list (pass_at_1, or a suite's primary metric); None otherwise or
    with one sample per prompt.  It is the decoding (and judging) noise that
    the residual variance component holds.
    """
    if not (metric == "pass_at_1" or metric.endswith("win_rate") or metric == "mean_score"):
        return None
    parts = []
    for row in artifacts.get("judgments") or []:
        scores = row.get("scores")
        if not isinstance(scores, list) or len(scores) < 2:
            return None
        values = [float(v) for v in scores]
        mean = math.fsum(values) / len(values)
        parts.append(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
    return math.fsum(parts) / len(parts) if parts else None
