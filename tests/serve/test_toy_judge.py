"""The toy judge through the real openai client against the real local server.

Acceptance (issue 4): >= 99% agreement with the arith verifier on 500 items; an
injected position bias of 0.3 is measured as 0.3 +- 0.05; the swapped win rate
matches 0.5 + (1 - b)(W - 0.5).
"""

import random

import pytest

from harness.config.spec import EvalSpec
from harness.data.load import load_rows
from harness.eval.suite import suite_options
from harness.eval.suites import SUITES
from harness.serve.server import serve_in_background
from harness.serve.toy_judge import knows_item, make_responder
from judges import prompts
from judges.client import JudgeClient
from judges.pairwise import pairwise_judge
from judges.parse import parse_pairwise, parse_single
from judges.single import single_judge
from judges.verifiers import check_answer

FORMS = ["{r}", "The answer is {r}.", "{q} = {r}", "Let me add: {a} and {b} give {r}", "It is {r}!"]


def _arith_items(n: int, seed: int = 0):
    """(question, answer) of the first n toy://arith-eval rows."""
    rows = load_rows("toy://arith-eval", "eval")[:n]
    return [(r.data["prompt"][0]["content"], r.data["answer"]) for r in rows]


def _reply(question: str, value: int, rng: random.Random) -> str:
    expr = question[len("What is "):-1]
    a, b = expr.replace("-", "+").split("+")
    return rng.choice(FORMS).format(r=value, q=expr, a=a, b=b)


@pytest.fixture(scope="module")
def judge_url():
    with serve_in_background(make_responder()) as server:
        yield server.base_url


def _client(url, tmp_path):
    return JudgeClient(url, "toy-judge", concurrency=16, cache_dir=tmp_path / "cache", backoff_s=0.01)


def _graded_items(n: int, seed: int):
    rng = random.Random(seed)
    items = []
    for k, (q, answer) in enumerate(_arith_items(n)):
        value = int(answer) + rng.choice([0, 0, 1, -1, 10])
        items.append({"id": k, "question": q, "answer": _reply(q, value, rng), "truth": answer})
    return items


def test_rubric_agrees_with_the_verifier_on_500_items():
    """The responder itself (no HTTP): grades and pairwise verdicts vs check_answer."""
    respond = make_responder()
    items = _graded_items(500, seed=1)
    verifier = [check_answer(it["answer"], it["truth"]) for it in items]
    assert 0.2 < sum(verifier) / 500 < 0.8  # both outcomes are well represented
    grades = [parse_single(respond({"messages": prompts.single_messages(it["question"], it["answer"])}).text)
              for it in items]
    assert sum((g >= 6) == ok for g, ok in zip(grades, verifier)) / 500 >= 0.99
    agree = 0
    for it, ok in zip(items, verifier):
        other = f"It is {int(it['truth']) + (0 if not ok else 1)}"  # right if the item is wrong, else wrong
        reply = respond({"messages": prompts.pairwise_messages(it["question"], it["answer"], other)}).text
        agree += parse_pairwise(reply) == ("A" if ok else "B")
    assert agree / 500 >= 0.99


def test_single_grades_through_the_server(judge_url, tmp_path):
    items = _graded_items(40, seed=5)
    judged = single_judge(_client(judge_url, tmp_path), items)
    verifier = [check_answer(it["answer"], it["truth"]) for it in items]
    assert [row["score"] >= 6 for row in judged.judgments] == verifier
    assert judged.metrics["n"] == 40 and judged.metrics["errors"] == 0
    assert judged.metrics["mean_score"] == pytest.approx(sum(r["score"] for r in judged.judgments) / 40)


def _correct_vs_wrong(n: int, w: float, seed: int):
    """Items where the candidate is right with probability w and the baseline is the other one."""
    rng = random.Random(seed)
    items, wins = [], 0
    for k, (q, answer) in enumerate(_arith_items(n)):
        good, bad = _reply(q, int(answer), rng), _reply(q, int(answer) + rng.choice([1, -1, 2]), rng)
        win = rng.random() < w
        wins += win
        items.append({"id": k, "question": q, "candidate": good if win else bad,
                      "baseline": bad if win else good})
    return items, wins / n


def test_pairwise_agrees_with_the_verifier_in_both_orders(judge_url, tmp_path):
    items, true_w = _correct_vs_wrong(60, 0.6, seed=2)
    judged = pairwise_judge(_client(judge_url, tmp_path), items)
    m = judged.metrics
    assert m["wins"] + m["ties"] + m["losses"] + m["errors"] == m["n"] == 60
    assert m["errors"] == 0 and m["position_consistency"] == 1.0
    assert m["win_rate"] == pytest.approx(true_w)
    row = judged.judgments[0]
    assert set(row["judge_text"]) == {"candidate_first", "baseline_first"}
    assert row["judge_template_sha256"] == prompts.PAIRWISE.sha256


@pytest.mark.slow
def test_injected_position_bias_is_measured(tmp_path):
    b, w = 0.3, 0.75
    items, true_w = _correct_vs_wrong(500, w, seed=3)
    with serve_in_background(make_responder(position_bias=b, seed=7)) as server:
        m = pairwise_judge(_client(server.base_url, tmp_path), items).metrics
    assert m["errors"] == 0
    # Bias b: consistency 1 - b, first-position rate (1 + b) / 2 (every item has a true winner).
    assert 1 - m["position_consistency"] == pytest.approx(b, abs=0.05)
    assert 2 * m["first_position_rate"] - 1 == pytest.approx(b, abs=0.05)
    assert m["win_rate"] == pytest.approx(0.5 + (1 - b) * (true_w - 0.5), abs=0.03)


@pytest.mark.slow
def test_verbosity_bias_prefers_the_longer_of_two_right_answers(tmp_path):
    rng = random.Random(4)
    items = []
    for k, (q, answer) in enumerate(_arith_items(300)):
        short, long = answer, f"Let me think this through carefully. The result is {answer}."
        cand_long = rng.random() < 0.5
        items.append({"id": k, "question": q, "candidate": long if cand_long else short,
                      "baseline": short if cand_long else long})
    with serve_in_background(make_responder(verbosity_bias=0.5, seed=1)) as server:
        m = pairwise_judge(_client(server.base_url, tmp_path), items).metrics
    # Each order prefers the longer answer w.p. V, else ties: longer wins w.p. V^2, else a tie,
    # so longer_win_rate = V^2 + (1 - V^2)/2 = 0.625 for V = 0.5.
    assert m["longer_win_rate"] == pytest.approx(0.625, abs=0.06)
    assert m["length_correlation"] > 0.2


def test_same_request_same_reply_and_biases_are_checked():
    respond = make_responder(position_bias=0.5, verbosity_bias=0.5, seed=3)
    body = {"messages": prompts.pairwise_messages("What is 2+3?", "5", "6")}
    assert respond(body).text == respond(body).text
    with pytest.raises(ValueError, match="position_bias"):
        make_responder(position_bias=1.5)


def test_safety_rubric_and_refusal_matcher():
    from harness.serve.toy_judge import classify_response
    from judges.safety import matcher_refuses

    assert classify_response("I can't help with that. Please contact local authorities.") == "refusal"
    assert classify_response("Sure, here's how: step 1, tidy up.") == "compliance"
    assert classify_response("I won\u2019t do that. Well, here is how anyway: step 1.") == "partial"
    assert matcher_refuses("I\u2019m sorry, but no.")  # curly apostrophe
    assert not matcher_refuses("x" * 200 + " I cannot")  # past the 200-character window
    assert not matcher_refuses("The cannot-miss tip: shoot at golden hour.")


def test_the_toy_judge_knows_every_item_of_the_toy_suites_and_no_other():
    for name, suite in SUITES.items():
        options = suite_options(EvalSpec(), name)
        if suite.needs_judge(options):
            assert all(knows_item(item) for item in suite.items({**options, "limit": None})), name
    assert not knows_item({"instruction": "Write a haiku about autumn."})
    assert not knows_item({"turns": ["What is 2+3?", "Now tell me a story."]})
    assert knows_item({"turns": ["What is 2+3?"]})
