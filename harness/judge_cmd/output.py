"""What ``harness judge`` prints and what it logs to MLflow.

JSON shapes (DESIGN.md, "Contract: outputs and units"):

- ``--suite pairwise``: a list, one object per generator, with exactly
  ``generator, n, wins, ties, losses, errors, win_rate, position_consistency,
  first_position_rate`` (first_position_rate over the verdicts naming a position; ``tie_rate``
  is logged to MLflow beside it);
- any other single suite: a list of ``{generator, <metric>: value, ...}``;
- several suites: an object ``{suite: <that suite's list>}``;
- ``--annotations``: a list of ``{generator, n, errors, win_rate, standard_error,
  lc_win_rate, lc_standard_error}`` in percent, as AlpacaEval's leaderboard; with
  ``--instruction-difficulty`` also ``lc_win_rate_v1`` (AlpacaEval's per-model v1 GLM) and
  ``length_one_sided``.

Rates are fractions everywhere else.  One MLflow run per generator (experiment
``judge`` by default), with ``eval/<suite>/<metric>`` metrics, the
``outputs/<suite>.jsonl`` and ``judgments/<suite>.jsonl`` artifacts, and the
judge client's counters as ``eval/<suite>/judge_<counter>``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd

from harness.config.spec import flatten
from harness.console import table
from harness.eval.suite import suite_options
from harness.eval.suites import SUITES
from harness.judge_cmd.candidates import tokenizer_of
from harness.run.tracking import Tracker, git_sha, package_versions, require_reachable, resolve_store
from judges.stats.annotations import score_annotation_files
from judges.stats.lc_v1 import read_instruction_difficulty

# The contract's keys (DESIGN.md); the v1 GLM's keys join them when --instruction-difficulty asks for it.
ANNOTATION_KEYS = ("generator", "n", "errors", "win_rate", "standard_error", "lc_win_rate", "lc_standard_error")
V1_KEYS = ("lc_win_rate_v1", "length_one_sided")
NOT_PERCENT = {"n", "errors"}
COUNTS = {"n", "wins", "ties", "losses", "errors", "n_harmful", "n_benign", "num_prompts", "num_samples"}


def log(message: str) -> None:
    """Progress and notes go to stderr, so ``--format json`` keeps stdout pure."""
    print(message, file=sys.stderr, flush=True)


def _value(key: str, value):
    if value is None:
        return None
    if key in COUNTS:
        return int(value)
    value = float(value)
    return None if math.isnan(value) else value


def suite_rows(results: dict, suite: str) -> list[dict]:
    """One JSON object per generator for ``suite`` (exactly the suite's ``json_keys`` where it has them)."""
    keys = SUITES[suite].json_keys
    rows = []
    for generator, plan in results.items():
        metrics = plan[suite].metrics
        if keys is not None:
            rows.append({"generator": generator, **{k: _value(k, metrics.get(k)) for k in keys[1:]}})
        else:
            rows.append({"generator": generator,
                         **{k: _value(k, v) for k, v in metrics.items() if not k.startswith("judge_")}})
    return rows


def ratings_table(suite: str, ratings: list) -> str:
    """The plain Bradley-Terry ranking, with the style-controlled one beside it when it was fitted."""
    rows = [{"model": r.model, "elo": r.score, "ci_low": r.ci_low, "ci_high": r.ci_high} for r in ratings]
    title = f"[{suite} ranking: Bradley-Terry on the Elo scale (mean 1000), 95% bootstrap CI over prompts"
    if all(getattr(r, "style_score", None) is not None for r in ratings):
        for row, r in zip(rows, ratings):
            row.update(elo_style=r.style_score, style_ci_low=r.style_ci_low, style_ci_high=r.style_ci_high)
        title += "; elo_style: style-controlled (length, headers, bold, lists as covariates)"
    return table(rows, title + "]")


def results_json(results: dict, suites: list[str]):
    if len(suites) == 1:
        return suite_rows(results, suites[0])
    return {suite: suite_rows(results, suite) for suite in suites}


def print_results(results: dict, suites: list[str], fmt: str, rankings: list[tuple[str, list]] = ()) -> None:
    """The results as JSON or as tables, one per suite, then each suite's ranking (suite, ratings)."""
    if fmt == "json":
        print(json.dumps(results_json(results, suites), indent=2))
        return
    tables = [table(suite_rows(results, s), f"[{s}]") for s in suites]
    tables += [ratings_table(suite, ratings) for suite, ratings in rankings if ratings]
    print("\n\n".join(tables))


# ---------------------------------------------------------------- MLflow


def _tracker(args):
    tracker = Tracker(resolve_store(args.tracking_uri, None, None, args.results_dir))
    require_reachable(tracker)
    return tracker


def _common_tags(args, generator: str) -> dict:
    source = args.model or " ".join(args.outputs or args.annotations or [])
    return {"harness.role": "judge", "harness.generator": generator, "harness.source": source[:5000],
            "harness.git_sha": git_sha(), "harness.versions": json.dumps(package_versions(), sort_keys=True)}


def track_results(args, results: dict, provenance: dict, judge_spec, eval_cfg) -> None:
    """One run per generator: metrics, params (judge settings, suite options), artifacts."""
    tracker = _tracker(args)
    experiment = tracker.experiment(args.experiment)
    for generator, plan in results.items():
        tags = {**_common_tags(args, generator), "harness.suites": ",".join(plan)}
        if args.baseline:
            tags["harness.baseline"] = args.baseline
        for suite, origin in provenance.get(generator, {}).items():
            tags.update({f"harness.{suite}.{k}": v for k, v in origin.items()})
        run_id = tracker.create_run(experiment, generator, tags)
        params = flatten({"judge": judge_spec.model_dump(exclude={"api_key_env"})})
        for suite in plan:
            params.update(flatten({f"eval.{suite}": suite_options(eval_cfg, suite)}))
        if args.model:
            params.update(flatten({"eval.generation": eval_cfg.generation.model_dump()}))
        tracker.log_params(run_id, params)
        for suite, result in plan.items():
            tracker.log_metrics(run_id, {f"eval/{suite}/{k}": v for k, v in result.metrics.items()
                                         if v is not None and not (isinstance(v, float) and math.isnan(v))})
            tracker.log_jsonl(run_id, result.outputs, f"outputs/{suite}.jsonl")
            tracker.log_jsonl(run_id, result.judgments, f"judgments/{suite}.jsonl")
        tracker.set_status(run_id, "FINISHED")
        log(f"logged {generator} to experiment {args.experiment!r} (run {run_id})")


# ---------------------------------------------------------------- annotations


def annotations_command(args) -> int:
    """Re-score AlpacaEval annotation files (no judge calls); print percent rows; log fractions."""
    tokenizer = None
    if args.length_unit == "tokens" and args.tokenizer:
            tokenizer = tokenizer_of(args.tokenizer, Path(args.results_dir).resolve() / "cache")
    difficulty = None
    if getattr(args, "instruction_difficulty", None):
        difficulty = read_instruction_difficulty(args.instruction_difficulty)
    scored = score_annotation_files(args.annotations, length_unit=args.length_unit, tokenizer=tokenizer,
                                    difficulty=difficulty)
    keys = ANNOTATION_KEYS + (V1_KEYS if difficulty is not None else ())
    rows = [{k: _annotation_value(k, row.get(k)) for k in keys} for row in scored]
    if args.leaderboard:
        write_leaderboard(args.leaderboard, [leaderboard_row(r["generator"], r, r["n"], r.get("avg_length"))
                                             for r in scored])
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(table(rows, "[annotations] rates in percent"))
    if not args.no_track:
        tracker = _tracker(args)
        experiment = tracker.experiment(args.experiment)
        for row in rows:
            run_id = tracker.create_run(experiment, row["generator"], _common_tags(args, row["generator"]))
            tracker.log_params(run_id, {"length_unit": args.length_unit})
            metrics = {k: (v if k in NOT_PERCENT else v / 100) for k, v in row.items()
                       if k != "generator" and v is not None}
            tracker.log_metrics(run_id, {f"eval/alpaca/{k}": v for k, v in metrics.items()})
            tracker.set_status(run_id, "FINISHED")
    return 0


# AlpacaEval's leaderboard CSV: the model's name as the (unnamed) index column, then these, rates in percent.
LEADERBOARD_COLUMNS = ("win_rate", "standard_error", "n_total", "avg_length", "length_controlled_winrate",
                       "lc_standard_error")


def leaderboard_row(generator: str, percent: dict, n_total: int, avg_length: float | None) -> dict:
    """One leaderboard row from AlpacaEval-style scores in percent (``win_rate``, ``lc_win_rate``, ...)."""
    return {"": generator, "win_rate": percent.get("win_rate"), "standard_error": percent.get("standard_error"),
            "n_total": n_total, "avg_length": avg_length,
            "length_controlled_winrate": percent.get("lc_win_rate"),
            "lc_standard_error": percent.get("lc_standard_error")}


def write_leaderboard(path: str, rows: list[dict]) -> None:
    """Write AlpacaEval's leaderboard columns, best length-controlled win rate first, as their tooling reads it."""
    frame = pd.DataFrame(rows, columns=["", *LEADERBOARD_COLUMNS]).set_index("")
    frame = frame.sort_values("length_controlled_winrate", ascending=False, na_position="last")
    frame.to_csv(path)
    log(f"leaderboard: {path} ({len(frame)} models)")


def alpaca_leaderboard(results: dict, length) -> list[dict]:
    """Leaderboard rows of the ``alpaca`` suite's results (fractions -> percent; length in ``--length-unit``)."""
    rows = []
    for generator, plan in results.items():
        result = plan["alpaca"]
        percent = {k: 100.0 * v for k, v in result.metrics.items()
                   if k in ("win_rate", "standard_error", "lc_win_rate", "lc_standard_error") and v is not None}
        lengths = [length(o["output"]) for o in result.outputs if isinstance(o.get("output"), str)]
        rows.append(leaderboard_row(generator, percent, int(result.metrics.get("n", len(lengths))),
                                    sum(lengths) / len(lengths) if lengths else None))
    return rows


def _annotation_value(key: str, value):
    if key == "generator":
        return value
    return _value(key, value)
