"""Judging in ``harness judge``: one ``SuiteResult`` per generator and suite, through the suite's scorer.

The judge endpoint is started once, only when a suite needs it; each result gets
the judge client's counters as ``judge_*`` metrics, and each judged suite the
judge's endpoint and model name as provenance.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from harness.errors import HarnessError
from harness.eval.outputs import baseline_for, by_generator, read_outputs
from harness.eval.suite import SuiteResult, suite_options
from harness.eval.suites import SUITES
from harness.judge_cmd.candidates import tokenizer_of
from harness.judge_cmd.output import log
from harness.serve.endpoint import judge_client, judge_endpoint
from judges.stats.annotations import length_function


def length_of(args, cache_dir: Path):
    """Reply length for the LC GLM and the length-bias report: characters, or tokens of the
    ``--model``'s (or ``--tokenizer``'s) tokenizer."""
    if args.length_unit == "chars":
        return len
    source = args.model or args.tokenizer
    if source is None:
        raise HarnessError("--length-unit tokens: give --model or --tokenizer DIR|ID to count tokens with")
    return length_function("tokens", tokenizer_of(source, cache_dir))


def judge_all(candidates, suites, eval_cfg, judge_spec, baseline_path, cache_dir: Path, length=len):
    """generator -> suite -> SuiteResult (the judge client's counters as ``judge_*`` metrics), and
    generator -> suite -> the judge's endpoint and model name."""
    baseline_rows = read_outputs(baseline_path) if baseline_path else None
    if baseline_rows and len(by_generator(baseline_rows)) > 1:
        raise HarnessError(f"--baseline {baseline_path}: holds several generators "
                           f"({sorted(by_generator(baseline_rows))}); a baseline is one generator")
    judged = any(SUITES[s].needs_judge(suite_options(eval_cfg, s)) for s in suites)
    results: dict[str, dict[str, SuiteResult]] = {}
    provenance: dict[str, dict[str, dict]] = {}
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(judge_endpoint(judge_spec, cache_dir)) if judged else None
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
    entry = SUITES[suite]
    baseline = None
    if entry.needs_baseline(options):
        baseline = baseline_for(items, baseline_rows, f"the baseline {baseline_path}")
    client, origin = None, {}
    if entry.needs_judge(options):
        client = judge_client(judge_spec, url, cache_dir / "judge")
        origin = {"judge_endpoint": url, "judge_model": client.model}
    result = entry.score(options, items, outputs, baseline, client, length)
    if client is not None:
        client.check_failures(judge_spec.max_error_rate, f"suite {suite}")
        result.metrics.update({f"judge_{k}": float(v) for k, v in client.stats.as_metrics().items()})
    return result, origin


def across_generators(results: dict, suites: list[str], length) -> list[tuple[str, list]]:
    """What a suite computes over all generators at once: its joint refit (with several generators)
    and its ranking; returns (suite, ratings) for each suite that ranks."""
    rankings = []
    for name in suites:
        suite = SUITES[name]
        judged = {generator: plan[name] for generator, plan in results.items() if name in plan}
        if suite.joint is not None and len(results) > 1:
            suite.joint(judged, length)
        if suite.rank is not None:
            rankings.append((name, suite.rank(judged)))
    return rankings
