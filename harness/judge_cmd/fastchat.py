"""``harness judge --fastchat-judgments DIR``: MT-Bench judgments in FastChat's ``model_judgment`` layout.

FastChat's llm_judge (``gen_judgment.py``, ``common.py``) appends one JSON line per
(question, model, turn) to ``data/<bench>/model_judgment/<judge>_single.jsonl``, or per
(question, model pair, turn) to ``<judge>_pair.jsonl``, and ``show_result.py`` reads them
back.  Given ``DIR`` (FastChat's ``data/mt_bench``), harness writes the same files:

- single: ``question_id, model, judge, user_prompt, judgment, score, turn, tstamp``;
  ``judge`` is ``[judge model, prompt template name]`` (a tuple in FastChat, a list in JSON);
  ``score`` is -1 where no grade could be parsed, as FastChat writes it;
- pairwise (``model_1`` the judged model, ``model_2`` the baseline, as FastChat's
  pairwise-baseline mode): ``question_id, model_1, model_2, g1_winner, g2_winner, judge,
  g1_user_prompt, g1_judgment, g2_user_prompt, g2_judgment, turn, tstamp``; game 1 shows
  model_1 as assistant A, game 2 swaps them; a winner is ``model_1``, ``model_2``, ``tie``
  or ``error``.

The judge prompts are rebuilt from the same items and outputs the judgments were made from
(``mtbench.per_turn_items``, whose order is the judgments'), with the same request builders.
Re-running replaces the rows of the same models and judge, so a file can gather several
``harness judge`` runs, as FastChat's does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from harness.errors import HarnessError
from harness.eval.outputs import baseline_for, read_outputs
from harness.eval.suites import mtbench
from judges.pairwise import pairwise_calls
from judges.single import single_call

G1 = {"A": "model_1", "B": "model_2", "C": "tie"}  # game 1: model_1 is assistant A
G2 = {"A": "model_2", "B": "model_1", "C": "tie"}  # game 2: the order swapped


def _user_prompt(messages: list[dict]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def single_rows(generator: str, found, judgments: list[dict], questions: dict, now: float) -> list[dict]:
    rows = []
    for (judge_item, _, turn), j in zip(found, judgments):
        call, _ = single_call(judge_item)
        rows.append({"question_id": questions[j["id"]], "model": generator,
                     "judge": [j["judge_model"], j["judge_template"]], "user_prompt": _user_prompt(call.messages),
                     "judgment": j["judge_text"] or "", "score": j["score"] if j["score"] is not None else -1,
                     "turn": turn, "tstamp": now})
    return rows


def pair_rows(generator: str, baseline: str, found, judgments: list[dict], questions: dict, now: float) -> list[dict]:
    rows = []
    for (judge_item, _, turn), j in zip(found, judgments):
        (first, second), _ = pairwise_calls(judge_item)  # candidate first, then baseline first
        texts = j["judge_text"]
        rows.append({"question_id": questions[j["id"]], "model_1": generator, "model_2": baseline,
                     "g1_winner": G1.get(j["verdicts"]["candidate_first"], "error"),
                     "g2_winner": G2.get(j["verdicts"]["baseline_first"], "error"),
                     "judge": [j["judge_model"], j["judge_template"]],
                     "g1_user_prompt": _user_prompt(first.messages), "g1_judgment": texts["candidate_first"] or "",
                     "g2_user_prompt": _user_prompt(second.messages), "g2_judgment": texts["baseline_first"] or "",
                     "turn": turn, "tstamp": now})
    return rows


def fastchat_rows(candidates: dict, results: dict, baseline_path: str | None, mode: str) -> list[dict]:
    """Every mtbench judgment of every generator as FastChat's rows (``mode``: single | pairwise)."""
    baseline_rows = read_outputs(baseline_path) if mode == "pairwise" else None
    now = time.time()
    rows = []
    for generator, plan in candidates.items():
        items, outputs = plan[mtbench.NAME]
        baseline = baseline_for(items, baseline_rows, f"the baseline {baseline_path}") if baseline_rows else None
        found = mtbench.per_turn_items(items, outputs, baseline)
        judgments = results[generator][mtbench.NAME].judgments
        questions = {item["id"]: item["question_id"] for item in items}
        if mode == "pairwise":
            name = baseline_rows[0].get("generator") or Path(baseline_path).stem
            rows += pair_rows(generator, name, found, judgments, questions, now)
        else:
            rows += single_rows(generator, found, judgments, questions, now)
    return rows


def judgment_file(directory: str, judge_model: str, mode: str) -> Path:
    """``DIR/model_judgment/<judge>_single.jsonl`` or ``..._pair.jsonl``, where FastChat's show_result.py looks."""
    return Path(directory) / "model_judgment" / f"{judge_model}_{'pair' if mode == 'pairwise' else 'single'}.jsonl"


def write_fastchat_judgments(directory: str, rows: list[dict], mode: str) -> Path:
    """Write ``rows`` (one judge) into FastChat's file, replacing earlier rows of the same models and judge."""
    if not rows:
        raise HarnessError("--fastchat-judgments: no mtbench judgments to write")
    path = judgment_file(directory, rows[0]["judge"][0], mode)
    models = ("model_1", "model_2") if mode == "pairwise" else ("model",)
    key = lambda r: (tuple(r[m] for m in models), tuple(r["judge"]))
    new = {key(r) for r in rows}
    kept = []
    if path.is_file():
        kept = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [r for r in kept if key(r) not in new]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept + rows), encoding="utf-8")
    return path
