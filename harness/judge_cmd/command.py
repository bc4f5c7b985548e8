"""``harness judge``: judge-only evaluation of a model, of output files, or of annotation files.

- ``--model DIR|ID|ADAPTER_DIR``: generate each suite's outputs (with the
  model's own chat template, ``eval.generation``, its backend resolved first), then
  judge them; a LoRA adapter directory is generated from its base with the adapter;
- ``--outputs FILE...``: judge existing outputs (AlpacaEval JSON list or JSONL),
  one result per ``generator`` (``harness.judge_cmd.candidates``);
- ``--annotations FILE...``: re-score AlpacaEval annotation files, no judge calls.

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

from harness.config.problems import format_problems, pydantic_problems
from harness.config.spec import EvalSpec, JudgeSpec
from harness.config.spec_io import parse_override, set_key
from harness.errors import HarnessError, SpecError
from harness.eval.backends import resolved
from harness.eval.suite import suite_options
from harness.eval.suites import SUITES, check_suites, pairwise
from harness.judge_cmd.candidates import candidates_from_files, candidates_from_model
from harness.judge_cmd.judging import across_generators, judge_all, length_of
from harness.judge_cmd.output import annotations_command, print_results, track_results

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


def cmd_judge(args) -> int:
    cache_dir = Path(args.results_dir).resolve() / "cache"
    if args.annotations:
        return annotations_command(args)
    if getattr(args, "instruction_difficulty", None):
        raise HarnessError("--instruction-difficulty applies to --annotations (AlpacaEval annotation files, "
                           "whose rows list the instructions in AlpacaEval's order)")
    judge_spec, eval_cfg = settings(args)
    suites = suite_plan(args, eval_cfg)
    if args.model:  # the backend that runs, not `auto`, is what outputs rows and params record
        eval_cfg = eval_cfg.model_copy(update={"generation": resolved(eval_cfg.generation)})
        candidates = candidates_from_model(args, suites, eval_cfg, cache_dir)
    else:
        candidates = candidates_from_files(args, suites, eval_cfg)
    length = length_of(args, cache_dir)
    results, provenance = judge_all(candidates, suites, eval_cfg, judge_spec, args.baseline, cache_dir, length)
    rankings = across_generators(results, suites, length)
    print_results(results, suites, args.format, rankings)
    if not args.no_track:
        track_results(args, results, provenance, judge_spec, eval_cfg)
    return 0
