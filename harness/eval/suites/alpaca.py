"""Suite ``alpaca``: logprob-weighted preference over a baseline, win rate + SE and the length-controlled
win rate (``judges.alpaca``), refitted jointly when several generators share one baseline."""

from __future__ import annotations

from harness.config.suite_options import AlpacaOptions
from harness.eval.suite import Suite, SuiteResult, always
from harness.eval.suites.common import check_baseline, eval_items, judge_rows, with_samples
from judges.alpaca import alpaca_judge, as_annotations
from judges.stats.annotations import score_annotations

NAME = "alpaca"


def _baseline_name(baseline: dict) -> str:
    names = {row.get("generator") for row in baseline.values()} - {None}
    return names.pop() if len(names) == 1 else "baseline"


def score(items, outputs, baseline, client, length=len) -> SuiteResult:
    """Preference of each output row over the baseline's output for its item."""
    pairs = judge_rows(items, outputs)
    check_baseline(pairs, baseline)
    generator = outputs[0].get("generator", "model") if outputs else "model"
    judged = alpaca_judge(client, [{"id": item["id"], "instruction": item["instruction"], "output": row["output"],
                                    "baseline": baseline[item["id"]]["output"]} for item, row in pairs],
                          generator=generator, baseline_name=_baseline_name(baseline), length=length)
    return SuiteResult(judged.metrics, list(outputs), with_samples(judged.judgments, pairs))


def scorer(options: dict):
    return score


def preference(row: dict) -> float | None:
    """AlpacaEval's soft preference in [1, 2] as the per-prompt win rate p - 1."""
    return None if row.get("preference") is None else float(row["preference"]) - 1.0


def joint_lc(results: dict[str, SuiteResult], length=len) -> None:
    """Generators judged against one baseline get the LC GLM fitted jointly over all of them
    (the instruction-difficulty term needs several models); the one-model fits are replaced."""
    rows = [row for result in results.values() for row in result.judgments]
    for scored in score_annotations(as_annotations(rows, length)):
        metrics = results[scored["generator"]].metrics
        for key in ("lc_win_rate", "lc_standard_error"):
            if scored[key] is not None:
                metrics[key] = scored[key] / 100.0  # percent -> fraction
        metrics["lc_joint_models"] = float(len(results))


SUITE = Suite(NAME, AlpacaOptions, eval_items, scorer, needs_baseline=always, joint=joint_lc,
              prompt_values={"win_rate": preference})
