"""Suite ``pairwise``: both-order pairwise verdicts against a baseline (``judges.pairwise``), and their
Bradley-Terry ranking when several generators are judged at once."""

from __future__ import annotations

import dataclasses

from harness.config.suite_options import PairwiseOptions
from harness.eval.suite import Suite, SuiteResult, always
from harness.eval.suites.common import check_baseline, eval_items, judge_rows, user_side, with_samples
from judges.pairwise import pairwise_judge
from judges.stats.rankings import Comparison, bt_ratings
from judges.stats.style import style_controlled_bt, style_covariates

NAME = "pairwise"
# The JSON row of `harness judge --suite pairwise`, exactly the contract's keys (DESIGN.md, "Contract:
# outputs and units"); tie_rate, which the contract names beside first_position_rate, is an MLflow metric.
JSON_KEYS = ("generator", "n", "wins", "ties", "losses", "errors", "win_rate", "position_consistency",
             "first_position_rate")
RANKING_BASELINE = "baseline"


def score(items, outputs, baseline, client, length=len) -> SuiteResult:
    """Both-order verdicts of each output row against the baseline's output for its item."""
    pairs = judge_rows(items, outputs)
    check_baseline(pairs, baseline)
    judged = pairwise_judge(client, [{**user_side(item), "candidate": row["output"],
                                      "baseline": baseline[item["id"]]["output"]} for item, row in pairs],
                            length=length)
    return SuiteResult(judged.metrics, list(outputs), with_samples(judged.judgments, pairs))


def scorer(options: dict):
    return score


def comparisons(results: dict[str, SuiteResult]) -> list[Comparison]:
    """Every generator's judged prompts as Bradley-Terry comparisons against the baseline, each naming
    its prompt id (the bootstrap's cluster: all generators share the prompts).

    Error prompts carry no outcome and are left out (they are counted in ``errors``)."""
    return [Comparison(generator, RANKING_BASELINE, row["score"],
                       None if row.get("id") is None else str(row["id"]))
            for generator, result in results.items()
            for row in result.judgments if row.get("score") is not None]


def rank(results: dict[str, SuiteResult], *, n_bootstrap: int = 200, seed: int = 0) -> list:
    """Bradley-Terry ratings on the Elo scale with 95% bootstrap CIs (judges.stats.rankings.bt_ratings),
    written into each generator's metrics as ``elo``, ``elo_ci_low``, ``elo_ci_high``; beside them the
    style-controlled ratings (``elo_style``, ``elo_style_ci_low``, ``elo_style_ci_high``) and the style
    coefficients (``style_coef/<feature>``, log-odds per standardized covariate).

    Returns the ratings, best first, the baseline included."""
    found = comparisons(results)
    if not found:
        return []
    ratings = bt_ratings(found, n_bootstrap=n_bootstrap, seed=seed, elo=True)
    styled = style_ranking(results, found, n_bootstrap=n_bootstrap, seed=seed)
    if styled is not None:
        ratings = [dataclasses.replace(r, style_score=styled.scores[r.model], style_ci_low=styled.ci[r.model][0],
                                       style_ci_high=styled.ci[r.model][1]) for r in ratings]
    for rating in ratings:
        if rating.model in results:
            metrics = results[rating.model].metrics
            metrics.update(elo=rating.score, elo_ci_low=rating.ci_low, elo_ci_high=rating.ci_high)
            if styled is not None:
                metrics.update(elo_style=rating.style_score, elo_style_ci_low=rating.style_ci_low,
                               elo_style_ci_high=rating.style_ci_high,
                               **{f"style_coef/{k}": v for k, v in styled.coefficients.items()})
    return ratings


def style_ranking(results: dict[str, SuiteResult], found: list[Comparison], *, n_bootstrap: int, seed: int):
    """arena-hard's style control (``judges.stats.style``): the same comparisons with length and markdown
    covariates from the judgments' ``style`` counts; None when a row lacks them (older judgments)."""
    rows = [row for result in results.values() for row in result.judgments if row.get("score") is not None]
    if len(rows) != len(found) or any("style" not in row for row in rows):
        return None
    x = style_covariates([r["style"]["candidate"] for r in rows], [r["style"]["baseline"] for r in rows])
    return style_controlled_bt(found, x, n_bootstrap=n_bootstrap, seed=seed, elo=True)


SUITE = Suite(NAME, PairwiseOptions, eval_items, scorer, needs_baseline=always, json_keys=JSON_KEYS, rank=rank,
              primary_metric="win_rate")
