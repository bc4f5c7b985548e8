"""The ``Suite`` record: what one evaluation suite is (its records: ``harness.eval.suites.SUITES``).

A suite runs in three steps, shared by sweeps and ``harness judge``:

1. ``Suite.items(options)``: the prompts, with the data's own fields (answers,
   labels, tests, reference answers) and an ``instruction`` text to match outputs by;
2. ``harness.eval.generation.generate_outputs`` (decoding by ``generation_for``):
   the model's outputs, one row per prompt and sample; judge-only runs read
   outputs from files instead (``harness.eval.outputs``);
3. ``Suite.score``: verifiers or judges -> ``SuiteResult``.

``options`` is the block ``eval.<suite>`` as a plain dict (``suite_options``).
Metrics are logged as ``eval/<suite>/<metric>``; ``outputs`` rows and
``judgments`` rows (one per prompt) become the artifacts
``outputs/<suite>.jsonl`` and ``judgments/<suite>.jsonl``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel


@dataclass
class SuiteResult:
    metrics: dict[str, float]
    outputs: list[dict] = field(default_factory=list)
    judgments: list[dict] = field(default_factory=list)
    # Per output row, its (prompt_ids, generated_ids) per turn, for the KL estimate; not persisted.
    samples: list[list[tuple[list[int], list[int]]]] = field(default_factory=list)


# (items, outputs, baseline, client, length) -> SuiteResult.  ``outputs`` rows name their item by ``id``;
# ``baseline`` maps an item id to the baseline's output row (None for suites without one); ``client`` is a
# ``judges.client.JudgeClient`` (None when the suite needs no judge); ``length(text)`` measures replies for
# the LC GLM and the length-bias report (characters, or tokens with ``--length-unit tokens``).
Scorer = Callable[..., SuiteResult]


def always(options: dict) -> bool:
    return True


def never(options: dict) -> bool:
    return False


def no_check(options: dict, items: list[dict]) -> None:
    return None


@dataclass(frozen=True)
class Suite:
    """One evaluation suite: everything that differs between suites, so no caller compares names.

    ``scorer(options)`` returns the scorer, a closure over the options.
    ``needs_judge`` / ``needs_baseline``: whether scoring calls the judge endpoint /
    compares with a baseline's outputs, for these options.  ``ground_truth``: scoring
    needs the suite's own items (answers, labels, tests, or multi-turn questions), so
    judge-only outputs are matched to them by id or instruction; the other suites
    judge any instruction.  ``check(options, items)`` fails before training when the
    data (or the machine) cannot serve the suite.  ``json_keys``: the exact keys of
    ``harness judge --format json`` rows, where the contract fixes them.  ``joint``
    refits a metric over all generators judged at once (``{generator: result}``,
    ``length``); ``sweep_joint`` does the same for a sweep, from the judgments rows of all its finished
    trials to ``{generator: extra metrics}``; ``rank`` rates those generators (``{generator: result}`` -> ratings).
    For the report's per-prompt values (``harness.report.per_prompt``): ``primary_metric``
    is the metric whose per-prompt value is the mean of a judgments row's scores, and
    ``prompt_values`` maps a metric to its per-prompt value read from a field of the row.
    ``headline_metric``: the suite's headline (its default ``report.primary`` metric,
    whose comparisons form the report's multiplicity family); ``headline`` falls
    back to ``primary_metric``.
    """

    name: str
    options: type[BaseModel]
    items: Callable[[dict], list[dict]]
    scorer: Callable[[dict], Scorer]
    needs_judge: Callable[[dict], bool] = always
    needs_baseline: Callable[[dict], bool] = never
    ground_truth: bool = False
    check: Callable[[dict, list[dict]], None] = no_check
    json_keys: tuple[str, ...] | None = None
    joint: Callable[[dict[str, SuiteResult], Callable], None] | None = None
    sweep_joint: Callable[[list[dict]], dict[str, dict[str, float]]] | None = None
    rank: Callable[[dict[str, SuiteResult]], list] | None = None
    primary_metric: str | None = None
    prompt_values: Mapping[str, Callable[[dict], float | None]] = field(default_factory=dict)
    headline_metric: str | None = None

    @property
    def headline(self) -> str | None:
        return self.headline_metric or self.primary_metric

    def score(self, options: dict, items, outputs, baseline, client, length=len) -> SuiteResult:
        """Run the scorer and add ``response_length``: the mean over output rows of their
        generated tokens (all turns) when harness generated them, else of their characters."""
        result = self.scorer(options)(items, outputs, baseline, client, length)
        result.metrics["response_length"] = response_length(outputs)
        return result


def response_length(outputs: list[dict]) -> float:
    if all("num_tokens" in r for r in outputs):
        lengths = [r["num_tokens"] for r in outputs]
    else:
        lengths = [sum(map(len, r["output"])) if isinstance(r["output"], list) else len(r["output"])
                   for r in outputs]
    return sum(lengths) / max(len(lengths), 1)


def suite_options(eval_cfg, suite: str) -> dict:
    """The options block ``eval.<suite>`` as a plain dict (empty when unset)."""
    options = getattr(eval_cfg, suite, None)
    if options is None:
        return {}
    return options.model_dump() if hasattr(options, "model_dump") else dict(options)
