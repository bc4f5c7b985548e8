"""Scoring a suite's outputs: verifiers and judges -> ``SuiteResult``.

A scorer is ``(items, outputs, baseline, client, options) -> SuiteResult``:
``items`` are the suite's prompts (``harness.eval.suite.suite_items``),
``outputs`` the rows to score, whose ``id`` names their item; ``baseline`` maps
an item id to the baseline's output row (suites judged against a baseline);
``client`` is a ``judges.client.JudgeClient`` (None for verifier suites).
The same scorers serve sweeps and ``harness judge``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from harness.errors import HarnessError
from harness.eval.suite import SuiteResult
from judges.stats.pass_at_k import mean_pass_at_k
from judges.verifiers import check_answer


def _grouped(items: list[dict], outputs: list[dict]) -> list[tuple[dict, list[dict]]]:
    """(item, its output rows) for every item that has outputs, in item order."""
    rows: dict[str, list[dict]] = {}
    for row in outputs:
        rows.setdefault(str(row["id"]), []).append(row)
    return [(item, rows[item["id"]]) for item in items if item["id"] in rows]


def pass_at_k_metrics(per_item: list[tuple[int, int]], ks: list[int], suite: str) -> dict[str, float]:
    """``pass_at_<k>`` and ``pass_at_<k>_se`` for each k; every item needs at least k samples."""
    fewest = min(n for n, _ in per_item)
    too_big = [k for k in ks if k > fewest]
    if too_big:
        raise HarnessError(f"eval.{suite}.k: {too_big} exceed the fewest samples of an item ({fewest})")
    metrics = {}
    for k in ks:
        metrics[f"pass_at_{k}"], metrics[f"pass_at_{k}_se"] = mean_pass_at_k(per_item, k)
    return metrics


def score_arith(items, outputs, baseline, client, options, length=len) -> SuiteResult:
    """Verifier pass@k: the last number of each output against the item's ``answer``.

    pass@k uses the unbiased estimator of Chen et al. (2021) for every k in
    ``options['k']`` (all k <= the samples per item).
    """
    judgments, per_item = [], []
    for item, rows in _grouped(items, outputs):
        answer = str(item["answer"])
        correct = [check_answer(r["output"], answer) for r in rows]
        judgments.append({"id": item["id"], "answer": answer, "n": len(correct), "correct": sum(correct),
                          "scores": [int(x) for x in correct]})
        per_item.append((len(correct), sum(correct)))
    if not per_item:
        raise HarnessError("arith: no outputs to score")
    metrics = {"num_prompts": float(len(per_item)), **pass_at_k_metrics(per_item, options.get("k", [1]), "arith")}
    return SuiteResult(metrics, list(outputs), judgments)


def _judge_rows(items: list[dict], outputs: list[dict]) -> list[tuple[dict, dict]]:
    """(item, output row) for every output row: each sample is judged as its own prompt."""
    return [(item, row) for item, rows in _grouped(items, outputs) for row in rows]


def _user_side(item: dict) -> dict:
    side = {"turns": item["turns"]} if "turns" in item else {"prompt": item["prompt"]}
    return {**side, "id": item["id"], "category": item.get("category"), "reference": item.get("reference")}


def _with_samples(judgments: list[dict], pairs: list[tuple[dict, dict]]) -> list[dict]:
    for row, (_, out) in zip(judgments, pairs):
        row["sample"] = out.get("sample", 0)
        row["generator"] = out.get("generator")
    return judgments


def _missing_baseline(pairs, baseline) -> None:
    missing = [item["id"] for item, _ in pairs if item["id"] not in baseline]
    if missing:
        raise HarnessError(f"the baseline has no output for {len(missing)} prompt(s) (first: {missing[:5]})")


def score_pairwise(items, outputs, baseline, client, options, length=len) -> SuiteResult:
    """Both-order pairwise verdicts against the baseline (``judges.pairwise``), per output row."""
    from judges.pairwise import pairwise_judge

    pairs = _judge_rows(items, outputs)
    _missing_baseline(pairs, baseline)
    judged = pairwise_judge(client, [{**_user_side(item), "candidate": row["output"],
                                      "baseline": baseline[item["id"]]["output"]} for item, row in pairs],
                            length=length)
    return SuiteResult(judged.metrics, list(outputs), _with_samples(judged.judgments, pairs))


def score_single(items, outputs, baseline, client, options, length=len) -> SuiteResult:
    """1-10 grades (``judges.single``), per output row; mean with a CI, per category."""
    from judges.single import single_judge

    pairs = _judge_rows(items, outputs)
    judged = single_judge(client, [{**_user_side(item), "answer": row["output"]} for item, row in pairs])
    return SuiteResult(judged.metrics, list(outputs), _with_samples(judged.judgments, pairs))


def score_mtbench(items, outputs, baseline, client, options, length=len) -> SuiteResult:
    """Multi-turn (FastChat question files, ``harness.eval.mtbench``): pairwise against a baseline or single
    grades, over the whole conversation; reference-guided where the item has reference answers."""
    score = score_pairwise if options.get("mode", "pairwise") == "pairwise" else score_single
    return score(items, outputs, baseline, client, options, length)


def score_alpaca(items, outputs, baseline, client, options, length=len) -> SuiteResult:
    """Logprob-weighted preference over the baseline, win rate + SE and LC win rate (``judges.alpaca``)."""
    from judges.alpaca import alpaca_judge

    pairs = _judge_rows(items, outputs)
    _missing_baseline(pairs, baseline)
    generator = outputs[0].get("generator", "model") if outputs else "model"
    judged = alpaca_judge(client, [{"id": item["id"], "instruction": item["instruction"], "output": row["output"],
                                    "baseline": baseline[item["id"]]["output"]} for item, row in pairs],
                          generator=generator, baseline_name=_baseline_name(baseline), length=length)
    return SuiteResult(judged.metrics, list(outputs), _with_samples(judged.judgments, pairs))


def _baseline_name(baseline: dict) -> str:
    names = {row.get("generator") for row in baseline.values()} - {None}
    return names.pop() if len(names) == 1 else "baseline"


def score_safety(items, outputs, baseline, client, options, length=len) -> SuiteResult:
    """Refusal of harmful prompts, over-refusal of benign ones (``judges.safety``)."""
    from judges.safety import safety_judge

    pairs = _judge_rows(items, outputs)
    judged = safety_judge(client, [{"id": item["id"], "prompt": item["prompt"], "response": row["output"],
                                    "label": item.get("label")} for item, row in pairs],
                          classifier=options.get("classifier", "both"))
    return SuiteResult(judged.metrics, list(outputs), _with_samples(judged.judgments, pairs))


def score_code(items, outputs, baseline, client, options, length=len) -> SuiteResult:
    """Candidate programs against the item's tests in the sandbox; unbiased pass@k (``judges.code``)."""
    from judges.code import score_code_outputs

    grouped = _grouped(items, outputs)
    if not grouped:
        raise HarnessError("code: no outputs to score")
    code_options = {k: options[k] for k in ("k", "timeout_s", "memory_mb", "unsafe", "concurrency") if k in options}
    metrics, judgments = score_code_outputs([item for item, _ in grouped],
                                            [[r["output"] for r in rows] for _, rows in grouped], code_options)
    return SuiteResult(metrics, list(outputs), judgments)


# suite -> (scorer, the modules it needs: the suite is available once they are installed)
SCORERS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "arith": (score_arith, ()),
    "pairwise": (score_pairwise, ("judges.pairwise", "harness.serve.endpoint")),
    "single": (score_single, ("judges.single", "harness.serve.endpoint")),
    "mtbench": (score_mtbench, ("judges.pairwise", "judges.single", "harness.serve.endpoint")),
    "alpaca": (score_alpaca, ("judges.alpaca", "harness.serve.endpoint")),
    "safety": (score_safety, ("judges.safety", "harness.serve.endpoint")),
    "code": (score_code, ("judges.code",)),
}


def available_suites() -> list[str]:
    """Suites this installation can run (every module a suite needs is present)."""
    return [name for name, (_, modules) in SCORERS.items()
            if all(importlib.util.find_spec(m) is not None for m in modules)]

# Suites whose scoring needs the suite's own data (answers, labels, tests): judge-only
# outputs are matched to it by id or instruction.  The others judge any instruction.
GROUND_TRUTH = ("arith", "safety", "code")
NEEDS_BASELINE = ("pairwise", "alpaca")


def needs_baseline(suite: str, options: dict) -> bool:
    return suite in NEEDS_BASELINE or (suite == "mtbench" and options.get("mode") == "pairwise")


def needs_judge(suite: str, options: dict) -> bool:
    return suite not in ("arith", "code") and not (suite == "safety" and options.get("classifier") == "matcher")


def score_suite(suite: str, items, outputs, baseline, client, options, length=len) -> SuiteResult:
    """Run the suite's scorer and add ``response_length``: the mean over output rows of their
    generated tokens (all turns) when harness generated them, else of their characters.

    ``length(text)`` measures replies for the LC GLM and the length-bias report (characters,
    or tokens with ``--length-unit tokens``).
    """
    result = SCORERS[suite][0](items, outputs, baseline, client, options, length)
    result.metrics["response_length"] = response_length(outputs)
    return result


def response_length(outputs: list[dict]) -> float:
    if all("num_tokens" in r for r in outputs):
        lengths = [r["num_tokens"] for r in outputs]
    else:
        lengths = [sum(map(len, r["output"])) if isinstance(r["output"], list) else len(r["output"])
                   for r in outputs]
    return sum(lengths) / max(len(lengths), 1)
