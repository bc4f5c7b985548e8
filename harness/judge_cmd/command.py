"""``harness judge``: judge-only evaluation of a model, of output files, or of annotation files.

- ``--model DIR|ID``: generate each suite's outputs (transformers, the model's
  own chat template, ``eval.generation``), then judge them;
- ``--outputs FILE...``: judge existing outputs (AlpacaEval JSON list or JSONL),
  one result per ``generator``.  Suites with ground truth (arith, safety, code)
  match each row to their own data by ``id`` or instruction; a row that matches
  nothing is an error, never dropped;
- ``--annotations FILE...``: re-score AlpacaEval annotation files, no judge calls.

Results are printed (``--format table|json``; with json, stdout holds only the
JSON) and logged to MLflow, experiment ``judge`` unless ``--experiment``, one
run per generator, unless ``--no-track`` (``harness.judge_cmd.output``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from pydantic import ValidationError

from harness.config.problems import format_problems, pydantic_problems
from harness.config.spec import EvalSpec, JudgeSpec
from harness.config.spec_io import parse_override, set_key
from harness.errors import DataError, HarnessError, SpecError
from harness.eval.outputs import baseline_for, by_generator, match_rows, read_output_files, read_outputs
from harness.eval.scoring import GROUND_TRUTH, needs_baseline, needs_judge, score_suite
from harness.eval.suite import (
    SuiteResult,
    check_suites,
    generate_outputs,
    generation_for,
    suite_items,
    suite_options,
)


def log(message: str) -> None:
    """Progress and notes go to stderr, so ``--format json`` keeps stdout pure."""
    print(message, file=sys.stderr, flush=True)


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
    suites = list(dict.fromkeys(args.suite or (["pairwise"] if args.baseline else [])))
    if not suites:
        raise HarnessError("--suite: name at least one suite (or give --baseline FILE for pairwise)")
    check_suites(suites)
    for suite in suites:
        if needs_baseline(suite, suite_options(eval_cfg, suite)) and not args.baseline:
            raise HarnessError(f"--suite {suite}: judged against a baseline; give --baseline FILE")
    return suites


# ---------------------------------------------------------------- candidates


def _numbered(rows: list[dict]) -> list[dict]:
    """Rows with ``sample``: the k-th row of the same id is sample k."""
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        k = seen.get(row["id"], 0)
        seen[row["id"]] = k + 1
        out.append({**row, "sample": k})
    return out


def items_from_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Suites without ground truth judge any instruction: each row is a prompt of its own."""
    items, outputs = [], []
    for i, row in enumerate(rows):
        item_id = row["id"] if row.get("id") is not None else str(i)
        items.append({"id": item_id, "prompt": row["instruction"], "instruction": row["instruction"],
                      "where": row["where"]})
        outputs.append({**row, "id": item_id, "sample": 0})
    if len({item["id"] for item in items}) != len(items):
        raise HarnessError(f"{rows[0]['where'].split(':')[0]}: duplicate ids for generator "
                           f"{rows[0]['generator']!r}; ids must be unique outside ground-truth suites")
    return items, outputs


def matched_to_suite(suite: str, options: dict, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Items of the suite's own data that the rows answer (all of its data is searched)."""
    items = suite_items(suite, {**options, "limit": None})
    pairs = match_rows(rows, items, f"the {suite} suite's data")
    for row, item in pairs:
        turns = len(item.get("turns") or [])
        if turns and not (isinstance(row["output"], list) and len(row["output"]) == turns):
            raise DataError(f"{row['where']}: field 'output': question {item['id']} has {turns} turns; give a "
                            f"list of {turns} answers (value seen: {row['output']!r:.60})")
    outputs = _numbered([{**row, "id": item["id"]} for row, item in pairs])
    answered = {row["id"] for row in outputs}
    return [item for item in items if item["id"] in answered], outputs


def candidates_from_files(args, suites, eval_cfg) -> dict[str, dict[str, tuple]]:
    """generator -> suite -> (items, outputs) from ``--outputs`` files."""
    out: dict[str, dict[str, tuple]] = {}
    for generator, rows in by_generator(read_output_files(args.outputs)).items():
        for suite in suites:
            options = suite_options(eval_cfg, suite)
            if suite in GROUND_TRUTH or suite == "mtbench":
                out.setdefault(generator, {})[suite] = matched_to_suite(suite, options, rows)
            else:
                out.setdefault(generator, {})[suite] = items_from_rows(rows)
    return out


def candidates_from_model(args, suites, eval_cfg, cache_dir: Path) -> dict[str, dict[str, tuple]]:
    """The model's own outputs on each suite's prompts (generator = the model's name)."""
    from harness.train.models import device, load_model, load_tokenizer, resolve_model_path

    path = resolve_model_path(args.model, cache_dir)
    model, tokenizer = load_model(path).to(device()).eval(), load_tokenizer(path)
    generator = args.model.rstrip("/").split("/")[-1] if not args.model.startswith("toy://") else args.model
    plan = {}
    for suite in suites:
        options = suite_options(eval_cfg, suite)
        items = suite_items(suite, options)
        outputs, _ = generate_outputs(items, model, tokenizer, generation_for(eval_cfg.generation, options),
                                      generator, progress=True, desc=f"generate {suite}")
        plan[suite] = (items, outputs)
    return {generator: plan}


# ---------------------------------------------------------------- judging


def length_of(args, cache_dir: Path):
    """Reply length for the LC GLM and the length-bias report: characters, or tokens of the
    ``--model``'s (or ``--tokenizer``'s) tokenizer."""
    from judges.stats.annotations import length_function

    if args.length_unit == "chars":
        return len
    source = args.model or args.tokenizer
    if source is None:
        raise HarnessError("--length-unit tokens: give --model or --tokenizer DIR|ID to count tokens with")
    from harness.train.models import load_tokenizer, resolve_model_path

    return length_function("tokens", load_tokenizer(resolve_model_path(source, cache_dir)))


def judge_all(candidates, suites, eval_cfg, judge_spec, baseline_path, cache_dir: Path, length=len):
    """generator -> suite -> SuiteResult (the judge client's counters as ``judge_*`` metrics), and
    generator -> suite -> the judge's endpoint and model name."""
    import contextlib

    baseline_rows = read_outputs(baseline_path) if baseline_path else None
    if baseline_rows and len(by_generator(baseline_rows)) > 1:
        raise HarnessError(f"--baseline {baseline_path}: holds several generators "
                           f"({sorted(by_generator(baseline_rows))}); a baseline is one generator")
    judged = any(needs_judge(s, suite_options(eval_cfg, s)) for s in suites)
    results: dict[str, dict[str, SuiteResult]] = {}
    provenance: dict[str, dict[str, dict]] = {}
    with contextlib.ExitStack() as stack:
        url = None
        if judged:
            from harness.serve.endpoint import judge_endpoint

            url = stack.enter_context(judge_endpoint(judge_spec, cache_dir))
        for generator, plan in candidates.items():
            for suite, (items, outputs) in plan.items():
                options = suite_options(eval_cfg, suite)
                log(f"judging {generator}: {suite} ({len(outputs)} outputs)")
                result, origin = _judge_one(suite, options, items, outputs, baseline_rows, baseline_path,
                                            judge_spec, url, cache_dir, length)
                results.setdefault(generator, {})[suite] = result
                provenance.setdefault(generator, {})[suite] = origin
    return results, provenance


def _judge_one(suite, options, items, outputs, baseline_rows, baseline_path, judge_spec, url, cache_dir, length):
    baseline = None
    if needs_baseline(suite, options):
        baseline = baseline_for(items, baseline_rows, f"the baseline {baseline_path}")
    client, origin = None, {}
    if needs_judge(suite, options):
        from harness.serve.endpoint import judge_client

        client = judge_client(judge_spec, url, cache_dir / "judge")
        origin = {"judge_endpoint": url, "judge_model": client.model}
    result = score_suite(suite, items, outputs, baseline, client, options, length)
    if client is not None:
        result.metrics.update({f"judge_{k}": float(v) for k, v in client.stats.as_metrics().items()})
    return result, origin


def joint_lc(results: dict, length) -> None:
    """Generators judged against one baseline get the LC GLM fitted jointly over all of them
    (the instruction-difficulty term needs several models); the one-model fits are replaced."""
    from judges.alpaca import as_annotations
    from judges.stats.annotations import score_annotations

    rows = [row for plan in results.values() for row in plan["alpaca"].judgments]
    for scored in score_annotations(as_annotations(rows, length)):
        metrics = results[scored["generator"]]["alpaca"].metrics
        for key in ("lc_win_rate", "lc_standard_error"):
            if scored[key] is not None:
                metrics[key] = scored[key] / 100.0  # percent -> fraction
        metrics["lc_joint_models"] = float(len(results))


def cmd_judge(args) -> int:
    from harness.judge_cmd.output import add_pairwise_ratings, print_results, track_results

    cache_dir = Path(args.results_dir).resolve() / "cache"
    if args.annotations:
        from harness.judge_cmd.output import annotations_command

        return annotations_command(args)
    judge_spec, eval_cfg = settings(args)
    suites = suite_plan(args, eval_cfg)
    if args.model:
        candidates = candidates_from_model(args, suites, eval_cfg, cache_dir)
    else:
        candidates = candidates_from_files(args, suites, eval_cfg)
    length = length_of(args, cache_dir)
    results, provenance = judge_all(candidates, suites, eval_cfg, judge_spec, args.baseline, cache_dir, length)
    if "alpaca" in suites and len(results) > 1:
        joint_lc(results, length)
    ratings = add_pairwise_ratings(results) if "pairwise" in suites else []
    print_results(results, suites, args.format, ratings)
    if not args.no_track:
        track_results(args, results, provenance, judge_spec, eval_cfg)
    return 0
