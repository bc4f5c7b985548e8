"""Issue 13 item 4: MT-Bench judged per turn, as FastChat's llm_judge does.

Turn 1 is judged with the single-turn template (first question, first answer), turn 2 with the
multi-turn one (the whole conversation).  The toy rubric judge grades a single answer 10 when right
and 1 when wrong, and a conversation 1 + round(9 · turns right / turns) (half right: 5).
"""

import pytest

from harness.eval.suites import SUITES
from harness.eval.suites.mtbench import load_questions
from harness.report.per_prompt import per_prompt_values, reproduces
from judges.client import JudgeClient


def _client(url, tmp_path):
    return JudgeClient(url, "judge", concurrency=8, max_retries=2, cache_dir=tmp_path / "cache", backoff_s=0.001)


def _setup(n=4):
    """Question k: turn 1 right for k in {0, 1}, turn 2 right for k in {0, 2}."""
    questions = load_questions("toy://chat-eval")[:n]
    outputs = []
    for k, q in enumerate(questions):
        one = q["reference"][0] if k in (0, 1) else q["reference"][0] + "9"
        two = q["reference"][1] if k in (0, 2) else q["reference"][1] + "9"
        outputs.append({"id": q["id"], "sample": 0, "output": [one, two], "generator": "m"})
    return questions, outputs


def test_single_mode_grades_each_turn(toy_url, tmp_path):
    """Turn 1 grades: 10, 10, 1, 1 (mean 5.5).  Turn 2 sees the conversation: both right 10, one of
    two right 5, so 10, 5, 5, 1 (mean 5.25).  Overall: the mean of the 8 judgments, 5.375 (the
    average of the turn means: equal counts).  Before the fix there was one grade per conversation
    (10, 5, 5, 1) and no turn metrics."""
    questions, outputs = _setup()
    result = SUITES["mtbench"].score({"mode": "single"}, questions, outputs, None, _client(toy_url, tmp_path))
    m, rows = result.metrics, result.judgments
    assert [(r["id"], r["turn"]) for r in rows] == [(q["id"], t) for q in questions for t in (1, 2)]
    assert [r["judge_template"] for r in rows[:2]] == ["single-v1", "single-multi-v1"]
    assert [r["score"] for r in rows if r["turn"] == 1] == [10, 10, 1, 1]
    assert [r["score"] for r in rows if r["turn"] == 2] == [10, 5, 5, 1]
    assert m["turn1/mean_score"] == 5.5 and m["turn2/mean_score"] == 5.25
    assert m["mean_score"] == pytest.approx(5.375)
    assert m["turn1/n"] == 4 and m["n"] == 8
    # Paired per-prompt values for the report: a question's value is the mean of its two turns.
    values = per_prompt_values("mtbench", "mean_score", {"judgments": rows})
    assert values == {questions[0]["id"]: 10.0, questions[1]["id"]: 7.5, questions[2]["id"]: 3.0,
                      questions[3]["id"]: 1.0}
    assert reproduces(values, m["mean_score"])
    turn2 = per_prompt_values("mtbench", "turn2/mean_score", {"judgments": rows})
    assert list(turn2.values()) == [10.0, 5.0, 5.0, 1.0] and reproduces(turn2, m["turn2/mean_score"])


def test_pairwise_mode_judges_each_turn_in_both_orders(toy_url, tmp_path):
    """Against the reference answers as baseline (always right): turn 1 ties where the model is right
    (k = 0, 1) and loses elsewhere: win rate (0.5 + 0.5) / 4 = 0.25.  Turn 2 (conversation quality):
    tie only for k = 0: 0.5 / 4 = 0.125.  Overall: 1.5 / 8 = 0.1875."""
    questions, outputs = _setup()
    baseline = {q["id"]: {"output": q["reference"]} for q in questions}
    result = SUITES["mtbench"].score({"mode": "pairwise"}, questions, outputs, baseline, _client(toy_url, tmp_path))
    m, rows = result.metrics, result.judgments
    assert len(rows) == 8 and [r["judge_template"] for r in rows[:2]] == ["pairwise-v1", "pairwise-multi-v1"]
    assert m["turn1/win_rate"] == 0.25 and m["turn2/win_rate"] == 0.125
    assert m["win_rate"] == pytest.approx(0.1875)
    assert (m["turn1/ties"], m["turn1/losses"], m["turn2/ties"], m["turn2/losses"]) == (2, 2, 1, 3)
    values = per_prompt_values("mtbench", "win_rate", {"judgments": rows})
    assert reproduces(values, m["win_rate"])
