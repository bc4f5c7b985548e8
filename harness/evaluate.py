"""Evaluation suites run on a model after training: generate, score, aggregate.

A suite is a function ``(model, tokenizer, options, generation) ->
SuiteResult``.  Its metrics are logged as ``eval/<suite>/<metric>``, its
``outputs`` rows (one per prompt and sample) and ``judgments`` rows (one per
prompt) become the artifacts ``outputs/<suite>.jsonl`` and
``judgments/<suite>.jsonl`` that reports compute paired statistics from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from harness.data import load_rows
from harness.errors import HarnessError
from harness.generate import generate
from harness.spec import GenerationSpec
from harness.tokenization import encode_prompt
from judges.stats import mean_pass_at_k
from judges.verifiers import check_answer, extract_number


@dataclass
class SuiteResult:
    metrics: dict[str, float]
    outputs: list[dict] = field(default_factory=list)
    judgments: list[dict] = field(default_factory=list)


def generation_for(base: GenerationSpec, options: dict) -> GenerationSpec:
    """A suite's decoding settings: its own non-null options override ``eval.generation``."""
    own = {k: options[k] for k in ("max_new_tokens", "temperature", "top_p", "n", "seed")
           if options.get(k) is not None}
    return base.model_copy(update=own)


def arith_suite(model, tokenizer, options: dict, generation: GenerationSpec,
                progress: bool = True) -> SuiteResult:
    """Verifier pass@k on arithmetic prompts with known answers.

    Each prompt gets ``n`` samples; pass@k uses the unbiased estimator of
    Chen et al. (2021) for every k in ``options['k']`` (all k <= n).
    """
    rows = load_rows(options["data"], "eval")[: options["limit"]]
    check_suite_data("arith", rows)
    prompts = [encode_prompt(tokenizer, r.data["prompt"], generation.system_prompt) for r in rows]
    completions = generate(model, tokenizer, prompts, generation, progress=progress, desc="eval arith")
    settings = generation.model_dump()
    outputs, judgments, per_item, lengths = [], [], [], []
    for i, (row, samples) in enumerate(zip(rows, completions)):
        item_id = str(row.data.get("id", i))
        answer = str(row.data["answer"])
        correct = [check_answer(c.text, answer) for c in samples]
        for s, (c, ok) in enumerate(zip(samples, correct)):
            outputs.append({"id": item_id, "sample": s, "prompt": row.data["prompt"], "output": c.text,
                            "num_tokens": c.num_tokens, "generation": settings})
            lengths.append(c.num_tokens)
        judgments.append({"id": item_id, "answer": answer, "n": len(correct), "correct": sum(correct),
                          "scores": [int(x) for x in correct]})
        per_item.append((len(correct), sum(correct)))
    metrics = {"response_length": sum(lengths) / max(len(lengths), 1), "num_prompts": float(len(rows))}
    for k in options["k"]:
        mean, se = mean_pass_at_k(per_item, k)
        metrics[f"pass_at_{k}"] = mean
        metrics[f"pass_at_{k}_se"] = se
    return SuiteResult(metrics, outputs, judgments)


SUITES: dict[str, Callable[..., SuiteResult]] = {"arith": arith_suite}


def suite_options(eval_cfg, suite: str) -> dict:
    """The options block ``eval.<suite>`` as a plain dict (empty when unset)."""
    options = getattr(eval_cfg, suite, None)
    if options is None:
        return {}
    return options.model_dump() if hasattr(options, "model_dump") else dict(options)


def check_suite_data(suite: str, rows: list) -> None:
    """Fail with file:line when a suite's data lacks what the suite needs (arith: a checkable answer)."""
    if suite != "arith":
        return
    for row in rows:
        answer = row.data.get("answer")
        if answer is None or extract_number(str(answer)) is None:
            raise HarnessError(f"{row.where}: field 'answer': the arith suite needs a numeric answer "
                               f"(value seen: {answer!r})")


def check_suites(names: list[str]) -> None:
    """Fail before any training when a spec asks for a suite this version cannot run."""
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise HarnessError(
            f"eval.suites: {unknown} not available in this version (available: {sorted(SUITES)})")
