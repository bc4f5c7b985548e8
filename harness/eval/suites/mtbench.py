"""Suite ``mtbench``: FastChat question files, multi-turn, judged pairwise against a baseline or single.

Scoring follows FastChat's llm_judge: every turn is judged on its own (``judges.pairwise`` /
``judges.single``), turn 1 with the single-turn template (the first question and answer), turn t > 1
with the multi-turn one showing the conversation up to turn t; reference-guided where the item has
reference answers (those of turns 1..t).  Metrics: ``turn<t>/<metric>`` per turn, and the overall
metrics under their usual names (``mean_score``, ``win_rate``, ...) over every (question, turn)
judgment, FastChat's "average" (the mean of the turn means when every turn has the same count).
Judgments: one row per question, sample and turn (``turn``, 1-based); standard errors and intervals
are clustered by question.  Judge-only outputs are matched to the questions, so each row's
``output`` must hold one answer per turn.

Items come from FastChat's ``question.jsonl``.

A question is ``{question_id, category, turns: [str, ...], reference?: [str, ...]}``;
reference answers may instead come from FastChat's reference-answer file
(``{question_id, choices: [{turns: [...]}]}``), which wins over an inline one.
``toy://chat-eval`` (two-turn arithmetic chats) has the same fields.  Items get
``id`` (the question id as a string, or the row's own ``id``), ``turns``,
``category``, ``reference`` and ``instruction`` (the first turn).
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.config.suite_options import MTBenchOptions
from harness.data.load import TOY_PREFIX, jsonl_lines, read_utf8
from harness.errors import DataError
from harness.eval.suite import Suite, SuiteResult
from harness.eval.suites.common import check_baseline, judge_rows, user_side
from harness.toy import toy_dataset
from judges.pairwise import as_turns, pairwise_judge
from judges.single import score_metrics, single_judge
from judges.stats.winrate import PairVerdicts, summarize_pairs

NAME = "mtbench"


def _jsonl(path: str) -> list[tuple[str, object]]:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    for number, line in jsonl_lines(read_utf8(file, path)):
        try:
            rows.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    return rows


def _raw(uri: str) -> list[tuple[str, object]]:
    if uri.startswith(TOY_PREFIX):
        return [(f"{uri}:{i + 1}", row) for i, row in enumerate(toy_dataset(uri[len(TOY_PREFIX):]))]
    return _jsonl(uri)


def _strings(value, where: str, field: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise DataError(f"{where}: field '{field}': expected a non-empty list of strings (value seen: {value!r:.80})")
    return value


def question_item(where: str, data) -> dict:
    """One validated item from a question row."""
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(data).__name__}")
    qid = data.get("id", data.get("question_id"))
    if not isinstance(qid, (str, int)) or isinstance(qid, bool):
        raise DataError(f"{where}: field 'question_id': expected an integer or string (value seen: {qid!r})")
    turns = _strings(data.get("turns"), where, "turns")
    reference = data.get("reference")
    if reference is not None:
        reference = _strings(reference, where, "reference")
    return {"id": str(qid), "question_id": data.get("question_id", qid), "turns": turns,
            "category": data.get("category") or "all", "reference": reference, "instruction": turns[0],
            "where": where}


def reference_answers(path: str) -> dict[str, list[str]]:
    """question id -> reference turns, from FastChat's reference-answer JSONL."""
    out = {}
    for where, data in _jsonl(path):
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise DataError(f"{where}: field 'choices': expected a list of {{turns: [...]}} objects")
        out[str(data.get("question_id"))] = _strings(choices[0].get("turns"), where, "choices[0].turns")
    return out


def load_questions(uri: str, reference_file: str | None = None) -> list[dict]:
    """The items of a question file or toy dataset, with reference answers merged in by question id."""
    items = [question_item(where, data) for where, data in _raw(uri)]
    if not items:
        raise DataError(f"{uri}: no questions")
    if reference_file:
        refs = reference_answers(reference_file)
        for item in items:
            item["reference"] = refs.get(str(item["question_id"]), item["reference"])
    return items


def items(options: dict) -> list[dict]:
    return load_questions(options["data"], options.get("reference_answers"))[:options.get("limit")]


def turn_items(item: dict, output_row: dict) -> list[tuple[int, dict]]:
    """(turn, judge item) for each turn of one output row: turn t shows user turns 1..t, the answers
    to them under ``answer`` and the references of turns 1..t (FastChat's turn-2 prompt shows the
    whole conversation and grades its last answer)."""
    side, answers = user_side(item), as_turns(output_row["output"])
    turns, reference = side.pop("turns"), side.pop("reference", None)
    out = []
    for t in range(1, len(turns) + 1):
        view = {"turns": turns[:t]} if t > 1 else {"question": turns[0]}
        out.append((t, {**side, **view, "answer": answers[:t], "reference": reference[:t] if reference else None}))
    return out


def per_turn_items(items, outputs, baseline) -> list[tuple[dict, dict, int]]:
    """(judge item, output row, turn) for every output row and turn; pairwise items get the baseline's.

    The order is that of the judgments rows, so a caller can rebuild each row's judge request
    (``harness.judge_cmd.fastchat`` does, for FastChat's ``user_prompt``)."""
    found = []
    for item, row in judge_rows(items, outputs):
        base = as_turns(baseline[item["id"]]["output"]) if baseline is not None else None
        for t, judge_item in turn_items(item, row):
            if base is not None:
                judge_item["candidate"], judge_item["baseline"] = judge_item.pop("answer"), base[:t]
            found.append((judge_item, row, t))
    return found


def _rows_with_turns(judgments: list[dict], found: list[tuple[dict, dict, int]]) -> list[dict]:
    for row, (_, out, t) in zip(judgments, found):
        row.update(sample=out.get("sample", 0), generator=out.get("generator"), turn=t)
    return judgments


def score_single(items, outputs, baseline, client, length=len) -> SuiteResult:
    """1-10 grades per turn; ``turn<t>/mean_score`` (+ interval, SE, per category) and the overall."""
    found = per_turn_items(items, outputs, None)
    judged = single_judge(client, [judge_item for judge_item, _, _ in found])
    rows = _rows_with_turns(judged.judgments, found)
    metrics = dict(judged.metrics)
    for t in sorted({t for _, _, t in found}):
        metrics.update(score_metrics([r for r in rows if r["turn"] == t], prefix=f"turn{t}/"))
    return SuiteResult(metrics, list(outputs), rows)


def score_pairwise(items, outputs, baseline, client, length=len) -> SuiteResult:
    """Both-order verdicts per turn; ``turn<t>/win_rate`` (+ counts, SE, bias rates) and the overall."""
    check_baseline(judge_rows(items, outputs), baseline)
    found = per_turn_items(items, outputs, baseline)
    judged = pairwise_judge(client, [judge_item for judge_item, _, _ in found], length=length)
    rows = _rows_with_turns(judged.judgments, found)
    metrics = dict(judged.metrics)
    for t in sorted({t for _, _, t in found}):
        chosen = [r for r in rows if r["turn"] == t]
        summary = summarize_pairs([PairVerdicts.from_positions(*r["verdicts"].values()) for r in chosen],
                                  [r["id"] for r in chosen])
        metrics.update({f"turn{t}/{key}": value for key, value in summary.as_metrics().items()})
    return SuiteResult(metrics, list(outputs), rows)


def scorer(options: dict):
    """Pairwise against the baseline (``mode: pairwise``, the default) or single grades, per turn."""
    return score_pairwise if options.get("mode", "pairwise") == "pairwise" else score_single


def turn_value(metric: str):
    """A judgments row's value of ``turn<t>/<metric>`` (its score on turn t) or of the overall metric."""
    turn = int(metric.split("/")[0][4:]) if metric.startswith("turn") else None

    def value(row: dict):
        if row.get("score") is None or (turn is not None and row.get("turn") != turn):
            return None
        return float(row["score"])
    return value


# Per-prompt values for the report's paired tests: a question's value is the mean of its turns' scores
# (and samples); turn<t>/ metrics take turn t's rows only.
PROMPT_VALUES = {f"{prefix}{metric}": turn_value(f"{prefix}{metric}")
                 for prefix in ("", "turn1/", "turn2/") for metric in ("mean_score", "win_rate")}


def needs_baseline(options: dict) -> bool:
    return options.get("mode") == "pairwise"


SUITE = Suite(NAME, MTBenchOptions, items, scorer, needs_baseline=needs_baseline, ground_truth=True,
              primary_metric="win_rate", prompt_values=PROMPT_VALUES)
