"""``harness judge``: judge-only evaluation of a model, of output files, or of annotation files.

- ``--model DIR|ID|ADAPTER_DIR``: generate each suite's outputs (with the
  model's own chat template, ``eval.generation``, its backend resolved first), then
  judge them; a LoRA adapter directory is generated from its base with the adapter;
- ``--outputs FILE...``: judge existing outputs (AlpacaEval JSON list or JSONL),
  one result per ``generator`` (``harness.judge_cmd.candidates``);
- ``--annotations FILE...``: re-score AlpacaEval annotation files, no judge calls.

``--leaderboard CSV`` also writes AlpacaEval's leaderboard, ``--fastchat-judgments DIR``
the mtbench judgments in FastChat's ``model_judgment`` layout (``harness.judge_cmd.fastchat``).

Results are printed (``--format table|json``; with json, stdout holds only the
JSON) and logged to MLflow, experiment ``judge`` unless ``--experiment``, one
run per generator, unless ``--no-track`` (``harness.judge_cmd.output``).

This module reads the settings and the plan of suites; ``candidates`` finds the
outputs, ``judging`` scores them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pydantic import ValidationError

from harness.cache import writable_dir
from harness.config.problems import format_problems, pydantic_problems
from harness.config.spec import EvalSpec, JudgeSpec
from harness.config.spec_io import parse_override, set_key
from harness.errors import HarnessError, SpecError
from harness.eval.backends import resolved
from harness.eval.suite import suite_options
from harness.eval.suites import SUITES, check_suites, mtbench, pairwise
from harness.judge_cmd.candidates import candidates_from_files, candidates_from_model
from harness.judge_cmd.fastchat import fastchat_rows, write_fastchat_judgments
from harness.judge_cmd.judging import across_generators, judge_all, length_of
from harness.judge_cmd.output import (
    alpaca_leaderboard,
    annotations_command,
    log,
    print_results,
    track_results,
    write_leaderboard,
)
from harness.serve.toy_judge import check_toy_items, guards_toy_judge

# ---------------------------------------------------------------- settings


def settings(args) -> tuple[JudgeSpec, EvalSpec]:
    """``judge:`` and ``eval:`` from ``--judge-url``, ``--judge-model`` and ``--set judge.K=V`` / ``eval.K=V``."""
    raw: dict = {"judge": {}, "eval": {}}
    origins = {}
    if args.judge_url:
        raw["judge"]["base_url"] = args.judge_url
    if args.judge_model:
        raw["judge"]["model"] = args.judge_model
    for text in args.overrides:
        key, value = parse_override(text)
        if key.split(".")[0] not in ("judge", "eval"):
            raise SpecError(f"--set {text}: harness judge takes judge.KEY=VALUE or eval.KEY=VALUE")
        raw, path = set_key(raw, key, value)
        origins[path] = f"--set {text}"
    out = []
    for name, model in (("judge", JudgeSpec), ("eval", EvalSpec)):
        try:
            out.append(model.model_validate(raw[name]))
        except ValidationError as exc:
            problems = [dataclasses.replace(p, path=f"{name}.{p.path}") for p in pydantic_problems(exc, model)]
            raise SpecError(format_problems(problems, "harness judge", {}, origins)) from None
    return out[0], out[1]


def suite_plan(args, eval_cfg) -> list[str]:
    """The suites to run (``--suite``, default pairwise with ``--baseline``), each available and,
    where it is judged against a baseline, given one."""
    suites = list(dict.fromkeys(args.suite or ([pairwise.NAME] if args.baseline else [])))
    if not suites:
        raise HarnessError("--suite: name at least one suite (or give --baseline FILE for pairwise)")
    check_suites(suites)
    for suite in suites:
        if SUITES[suite].needs_baseline(suite_options(eval_cfg, suite)) and not args.baseline:
            raise HarnessError(f"--suite {suite}: judged against a baseline; give --baseline FILE")
    return suites


def check_toy_judge(candidates: dict, suites: list[str], eval_cfg, judge_spec: JudgeSpec, allowed: bool) -> None:
    """The embedded toy judge (no ``judge.base_url``) scores only toy-world items (``check_toy_items``)."""
    if allowed or not guards_toy_judge(judge_spec):
        return
    judged = {}
    for suite in suites:
        if SUITES[suite].needs_judge(suite_options(eval_cfg, suite)):
            items = {item["id"]: item for plan in candidates.values() for item in plan.get(suite, ([], []))[0]}
            judged[f"--suite {suite}"] = list(items.values())
    check_toy_items(judged, "pass --allow-toy-judge")


def check_limits(args) -> None:
    """``eval.<suite>.limit`` cuts the prompts a model generates for; files are judged whole, so a
    limit set with ``--outputs`` would be ignored: refuse it."""
    for text in args.overrides:
        key = text.partition("=")[0].strip()
        if args.outputs and key.startswith("eval.") and key.endswith(".limit"):
            raise HarnessError(f"--set {text}: with --outputs every row of the files is judged; a limit only "
                               "cuts the prompts of --model generation (cut the files instead)")


def cmd_judge(args) -> int:
    cache_dir = Path(args.results_dir).resolve() / "cache"
    if args.annotations:
        if args.fastchat_judgments:
            raise HarnessError("--fastchat-judgments: annotation files hold no MT-Bench judgments; use it with "
                               "--outputs or --model and --suite mtbench")
        return annotations_command(args)
    check_limits(args)
    writable_dir(cache_dir.parent, "--results-dir")  # the judge cache (and the default store) live there
    if args.leaderboard and "alpaca" not in (args.suite or []):
        raise HarnessError("--leaderboard: AlpacaEval's leaderboard columns come from the alpaca suite; add "
                           "--suite alpaca (or score --annotations files)")
    if args.fastchat_judgments and mtbench.NAME not in (args.suite or []):
        raise HarnessError("--fastchat-judgments: FastChat's model_judgment files hold MT-Bench judgments; add "
                           "--suite mtbench")
    if args.instruction_difficulty:
        raise HarnessError("--instruction-difficulty applies to --annotations (AlpacaEval annotation files, "
                           "whose rows list the instructions in AlpacaEval's order)")
    judge_spec, eval_cfg = settings(args)
    suites = suite_plan(args, eval_cfg)
    if args.model:  # the backend that runs, not `auto`, is what outputs rows and params record
        eval_cfg = eval_cfg.model_copy(update={"generation": resolved(eval_cfg.generation)})
        candidates = candidates_from_model(args, suites, eval_cfg, cache_dir)
    else:
        candidates = candidates_from_files(args, suites, eval_cfg)
    check_toy_judge(candidates, suites, eval_cfg, judge_spec, args.allow_toy_judge)
    length = length_of(args, cache_dir)
    results, provenance = judge_all(candidates, suites, eval_cfg, judge_spec, args.baseline, cache_dir, length)
    rankings = across_generators(results, suites, length)
    print_results(results, suites, args.format, rankings)
    if args.leaderboard:
        write_leaderboard(args.leaderboard, alpaca_leaderboard(results, length))
    if args.fastchat_judgments:
        mode = suite_options(eval_cfg, mtbench.NAME).get("mode", "pairwise")
        rows = fastchat_rows(candidates, results, args.baseline, mode)
        path = write_fastchat_judgments(args.fastchat_judgments, rows, mode)
        log(f"FastChat judgments: {path} ({len(rows)} rows)")
    if not args.no_track:
        track_results(args, results, provenance, judge_spec, eval_cfg)
    return 0
