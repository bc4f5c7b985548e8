"""Suite ``single``: 1-10 grades of each output (``judges.single``); mean with a CI, per category."""

from __future__ import annotations

from harness.config.suite_options import SingleOptions
from harness.eval.suite import Suite, SuiteResult
from harness.eval.suites.common import eval_items, judge_rows, user_side, with_samples
from judges.single import single_judge

NAME = "single"


def score(items, outputs, baseline, client, length=len) -> SuiteResult:
    """A grade per output row (each sample is judged as its own prompt)."""
    pairs = judge_rows(items, outputs)
    judged = single_judge(client, [{**user_side(item), "answer": row["output"]} for item, row in pairs])
    return SuiteResult(judged.metrics, list(outputs), with_samples(judged.judgments, pairs))


def scorer(options: dict):
    return score


SUITE = Suite(NAME, SingleOptions, eval_items, scorer, primary_metric="mean_score")
