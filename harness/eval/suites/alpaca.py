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
        for key in ("lc_win_rate", "lc_standard_error", "lc_win_rate_v1"):  # v1: d = the joint fit's γ
            if scored[key] is not None:
                metrics[key] = scored[key] / 100.0  # percent -> fraction
        metrics["lc_joint_models"] = float(len(results))


def joint_over_trials(rows: list[dict]) -> dict[str, dict[str, float]]:
    """generator -> ``lc_win_rate_joint``, ``lc_standard_error_joint`` (fractions) and ``lc_joint_models``: the LC
    GLM fitted jointly over the judgments rows of a sweep's trials, per baseline that at least two trials share
    (the instruction-difficulty term needs several models; Dubois et al. 2024).  Lengths in characters."""
    rows = [r for r in rows if r["generator_1"] != r["generator_2"]]  # a trial that is its own baseline says nothing
    models = {b: {r["generator_2"] for r in rows if r["generator_1"] == b} for b in {r["generator_1"] for r in rows}}
    if all(len(m) < 2 for m in models.values()):
        return {}
    out = {}
    for scored in score_annotations(as_annotations(rows)):
        group = next(m for m in models.values() if scored["generator"] in m)
        if len(group) < 2:
            continue
        metrics = {"lc_joint_models": float(len(group))}
        for key in ("lc_win_rate", "lc_standard_error"):
            if scored[key] is not None:
                metrics[f"{key}_joint"] = scored[key] / 100.0  # percent -> fraction
        out[scored["generator"]] = metrics
    return out


SUITE = Suite(NAME, AlpacaOptions, eval_items, scorer, needs_baseline=always, joint=joint_lc,
              sweep_joint=joint_over_trials, prompt_values={"win_rate": preference}, headline_metric="lc_win_rate")
