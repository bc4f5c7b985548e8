"""Suite ``arith``: verifier pass@k, the last number of each output against the item's ``answer``."""

from __future__ import annotations

from harness.config.suite_options import ArithOptions
from harness.errors import HarnessError
from harness.eval.suite import Suite, SuiteResult, never
from harness.eval.suites.common import eval_items, grouped
from judges.stats.pass_at_k import mean_pass_at_k
from judges.verifiers import check_answer, extract_number

NAME = "arith"


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


def scorer(options: dict):
    """pass@k with the unbiased estimator of Chen et al. (2021) for every k in ``options['k']``
    (all k <= the samples per item)."""
    ks = options.get("k", [1])

    def score(items, outputs, baseline, client, length=len) -> SuiteResult:
        judgments, per_item = [], []
        for item, rows in grouped(items, outputs):
            answer = str(item["answer"])
            correct = [check_answer(r["output"], answer) for r in rows]
            judgments.append({"id": item["id"], "answer": answer, "n": len(correct), "correct": sum(correct),
                              "scores": [int(x) for x in correct]})
            per_item.append((len(correct), sum(correct)))
        if not per_item:
            raise HarnessError(f"{NAME}: no outputs to score")
        metrics = {"num_prompts": float(len(per_item)), **pass_at_k_metrics(per_item, ks, NAME)}
        return SuiteResult(metrics, list(outputs), judgments)

    return score


def check(options: dict, items: list[dict]) -> None:
    """Every item needs a numeric ``answer``; the error names the file and line."""
    for item in items:
        answer = item.get("answer")
        if answer is None or extract_number(str(answer)) is None:
            raise HarnessError(f"{item['where']}: field 'answer': the arith suite needs a numeric answer "
                               f"(value seen: {answer!r})")


SUITE = Suite(NAME, ArithOptions, eval_items, scorer, needs_judge=never, ground_truth=True, check=check,
              primary_metric="pass_at_1")
