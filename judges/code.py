"""The code verifier and the scoring of the `code` suite.

Items are dicts ``{id, tests, entry_point?}`` (loaded and checked by
``harness.eval.suites.code``):

- ``tests`` is Python source run after the candidate program; the sample
  passes when the script exits with status 0 within the sandbox limits (an
  ``assert`` that fails, or any exception, fails it).
- With ``entry_point`` (HumanEval style) the tests must define
  ``check(candidate)``, and ``check(<entry_point>)`` is called after them.

Program extraction (``extract_program``): the fenced blocks labelled
``python``/``py``/``python3`` are joined in order; if there are none, the
unlabelled fenced blocks; if there are no fences at all, the whole text.  A
fence left open at the end (a cut-off generation) runs to the end of the text.
Joining keeps helper functions from separate blocks, and a later corrected
definition replaces an earlier one as Python rebinds the name.

``score_code_outputs(items, samples, options)`` runs every sample through the
sandbox (a thread pool bounded by the CPU count) and returns the suite's
metrics (``pass_at_<k>`` and ``pass_at_<k>_se`` for each requested k, with the
unbiased estimator of ``judges.stats.pass_at_k``) and one judgment row per item.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from harness.errors import HarnessError
from judges.sandbox.runner import (
    DEFAULT_LIMITS,
    Limits,
    SandboxResult,
    check_isolation,
    run_python,
    sandbox_python,
)
from judges.stats.pass_at_k import mean_pass_at_k

DEFAULTS = {"k": [1], "timeout_s": 5.0, "memory_mb": 512, "unsafe": False, "concurrency": None}

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)
_PYTHON_LABELS = {"python", "py", "python3"}


def extract_program(text: str) -> str:
    """The program inside a model's reply, by the rule of the module docstring."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    if not blocks:
        return text
    python = [body for label, body in blocks if label in _PYTHON_LABELS]
    chosen = python or [body for label, body in blocks if not label]
    return "\n".join(chosen)


def build_script(program: str, item: dict) -> str:
    """The script the sandbox runs: program, then tests, then ``check(entry_point)`` if named."""
    parts = [program, item["tests"]]
    if item.get("entry_point"):
        parts.append(f"check({item['entry_point']})")
    return "\n\n".join(parts) + "\n"


def verify(output: str, item: dict, limits: Limits = DEFAULT_LIMITS, *, allow_unsafe: bool = False
           ) -> SandboxResult:
    """Run one model output against one item's tests in the sandbox."""
    return run_python(build_script(extract_program(output), item), limits, allow_unsafe=allow_unsafe)


def _options(options: dict | None) -> dict:
    merged = {**DEFAULTS, **{k: v for k, v in (options or {}).items() if v is not None}}
    if not merged["k"]:
        raise HarnessError("eval.code.k: needs at least one k, got []")
    return merged


def _check_k(items: Sequence[dict], samples: Sequence[Sequence[str]], ks: list[int]) -> None:
    if len(items) != len(samples):
        raise ValueError(f"{len(items)} items but {len(samples)} sample lists")
    for item, outs in zip(items, samples):
        bad = [k for k in ks if not 1 <= k <= len(outs)]
        if bad:
            raise HarnessError(f"eval.code.k: {bad} not in 1..n for item {item['id']!r}, which has "
                               f"n={len(outs)} samples (every k must be <= eval.code.n)")


def score_code_outputs(items: Sequence[dict], samples: Sequence[Sequence[str]], options: dict | None = None
                       ) -> tuple[dict[str, float], list[dict]]:
    """Verify every sample and aggregate pass@k.

    Args:
        items: dicts with ``id``, ``tests``, ``entry_point`` (``harness.eval.suites.code``).
        samples: ``samples[i]`` = the n_i output texts for ``items[i]`` (n may differ per item).
        options: ``k`` (list, default [1]; each k <= every item's n), ``timeout_s`` (wall limit
            per sample, default 5), ``memory_mb`` (512), ``unsafe`` (False), ``concurrency``
            (parallel sandboxes; default and maximum: the CPU count).
    Returns:
        (metrics, judgments): metrics ``pass_at_<k>``, ``pass_at_<k>_se``, ``num_prompts``,
        ``num_samples``, ``timeout_rate``; one judgment per item ``{id, n, correct, scores
        (0/1 per sample), reasons (one line per sample)}``.
    """
    opts = _options(options)
    ks = [int(k) for k in opts["k"]]
    _check_k(items, samples, ks)
    sandbox_python(check_isolation(opts["unsafe"]))  # refuse, or find the interpreter, before any thread
    limits = Limits(wall_s=float(opts["timeout_s"]), memory_mb=int(opts["memory_mb"]))
    jobs = [(i, out) for i, outs in enumerate(samples) for out in outs]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(int(opts["concurrency"] or cpus), cpus, max(len(jobs), 1)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda job: verify(job[1], items[job[0]], limits,
                                                   allow_unsafe=opts["unsafe"]), jobs))
    per_item: list[list[SandboxResult]] = [[] for _ in items]
    for (i, _), result in zip(jobs, results):
        per_item[i].append(result)
    judgments = [_judgment(item, runs) for item, runs in zip(items, per_item)]
    return _metrics(judgments, ks, results), judgments


def _judgment(item: dict, runs: list[SandboxResult]) -> dict:
    scores = [int(r.passed) for r in runs]
    return {"id": item["id"], "n": len(runs), "correct": sum(scores), "scores": scores,
            "reasons": [r.reason for r in runs]}


def _metrics(judgments: list[dict], ks: list[int], results: list[SandboxResult]) -> dict[str, float]:
    counts = [(j["n"], j["correct"]) for j in judgments]
    metrics = {"num_prompts": float(len(judgments)), "num_samples": float(len(results)),
               "timeout_rate": sum(r.timed_out for r in results) / max(len(results), 1)}
    for k in ks:
        mean, se = mean_pass_at_k(counts, k)
        metrics[f"pass_at_{k}"] = mean
        metrics[f"pass_at_{k}_se"] = se
    return metrics
