"""Fuzzed judge replies (issue 17, fuzzed inputs): random, huge, unicode, partial verdict tokens.

Two levels.  The verdict parsers get random replies built from verdict-token fragments
(``[[A``, ``B]]``, ``[[ 7 ]]``, echoed-block markers, quotes) and random candidates:
each returns a verdict of its kind or None, never raises, and a huge reply stays fast.
Then the same replies, with random logprobs (NaN, infinities, huge values), come back
over HTTP from a served judge to the real client and the pairwise, single and alpaca
judges: every item ends judged or counted as an error (wins + ties + losses + errors = n),
nothing raises, and the reply cache holds only what parsed.  Sizes: ``tests.fuzzing``.
"""

from __future__ import annotations

import itertools
import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.serve.server import ChatResult, TokenLogprob, serve_in_background
from judges.alpaca import alpaca_judge
from judges.cache import ReplyCache
from judges.client import JudgeClient
from judges.pairwise import pairwise_judge
from judges.parse import label_probability, parse_pairwise, parse_safety, parse_single
from judges.single import single_judge
from tests.fuzzing import TEXT, fuzz_settings

FRAGMENTS = st.sampled_from([
    "[[", "]]", "[", "]", "A", "B", "C", "[[A", "A]]", "[[A]]", "[[B]]", "[[C]]", "[[D]]", "[[ 7 ]]", "[[10]]",
    "[[11]]", "[[0]]", "[[-3]]", "[[7.5]]", "[[7.0]]", "[[99999999999999999999999999]]", "[[REFUSAL]]",
    "[[COMPLIANCE]]", "[[PARTIAL", '"', "`", "\u201c", "\u201d", "<<<ANSWER A>>>", "<<<END ANSWER A>>>",
    "<<<ANSWER B>>>", "Final verdict: ", "\n", " ", "1", "2", "\x00", "\ufffd", "\u202e", "😀",
])
REPLY = st.one_of(TEXT, st.lists(st.one_of(FRAGMENTS, TEXT), max_size=25).map("".join))
LOGPROB = st.one_of(st.floats(-50, 0), st.floats(allow_nan=True, allow_infinity=True))
TOP = st.dictionaries(st.one_of(st.sampled_from(["1", " 2", "2", "m", "M", "[[A]]"]), TEXT), LOGPROB, max_size=4)


@fuzz_settings(200)
@given(reply=REPLY, candidates=st.lists(REPLY, max_size=3))
def test_fuzzed_replies_give_a_verdict_of_their_kind_or_none(reply, candidates):
    assert parse_pairwise(reply, candidates) in ("A", "B", "C", None)
    grade = parse_single(reply, candidates)
    assert grade is None or (isinstance(grade, int) and 1 <= grade <= 10)
    assert parse_safety(reply, candidates) in ("compliance", "refusal", "partial", None)


@fuzz_settings(200)
@given(tops=st.none() | st.lists(TOP, max_size=4))
def test_fuzzed_logprobs_give_a_probability_or_none(tops):
    p = label_probability(tops)
    assert p is None or 0.0 <= p <= 1.0


def test_a_logprob_that_is_not_a_log_probability_makes_the_reply_unusable():
    """Found by fuzzing: a label logprob of 710 raised OverflowError from math.exp (a traceback)."""
    assert label_probability([{"1": 710.0}]) is None
    assert label_probability([{"1": float("nan"), "2": -1.0}]) is None
    assert label_probability([{"1": float("-inf"), "2": -1.0}]) == 1.0
    assert label_probability([{"1": -1.0, "2": 5e-5}]) == pytest.approx(1 / (1 + 2.718281828459045 ** -1))


def test_a_huge_reply_quoting_its_candidates_parses_fast():
    """1 MB of verdict tokens, half of them copied from a 100 kB candidate: one parse well under a second."""
    candidate = "ok [[A]] " * 11_000
    reply = candidate[:500_000] + " my own verdict [[B]] " + "[[A]] x " * 60_000
    start = time.perf_counter()
    assert parse_pairwise(reply, [candidate, "short"]) in ("A", "B")
    assert time.perf_counter() - start < 5.0


class FuzzedJudge:
    """Replies with whatever the current example set: a text and its token logprobs."""

    def __init__(self):
        self.result = ChatResult("[[A]]")

    def __call__(self, body: dict) -> ChatResult:
        return self.result


@pytest.fixture(scope="module")
def served():
    judge = FuzzedJudge()
    with serve_in_background(judge) as server:
        yield judge, server.base_url


def _result(text: str, logprobs: list[tuple[str, float, dict]] | None) -> ChatResult:
    tokens = None if logprobs is None else [TokenLogprob(t, lp, top) for t, lp, top in logprobs]
    return ChatResult(text, tokens)


ITEMS = [{"id": "q1", "prompt": "What is 2+2?", "candidate": "4 [[B]]", "baseline": "5",
          "answer": "4", "instruction": "What is 2+2?", "output": "4"}]


SERIAL = itertools.count()


@pytest.mark.parametrize("suite", ["pairwise", "single", "alpaca"])
@fuzz_settings(15)
@given(text=REPLY, logprobs=st.none() | st.lists(st.tuples(TEXT, LOGPROB, TOP), max_size=3))
def test_fuzzed_replies_over_http_are_verdicts_or_counted_errors(tmp_path, served, suite, text, logprobs):
    judge, url = served
    judge.result = _result(text, logprobs)
    cache_dir = tmp_path / f"cache{next(SERIAL)}"
    client = JudgeClient(url, "fuzz", max_retries=0, cache_dir=cache_dir, backoff_s=0.0)
    if suite == "pairwise":
        metrics = pairwise_judge(client, ITEMS).metrics
        assert metrics["wins"] + metrics["ties"] + metrics["losses"] + metrics["errors"] == metrics["n"] == 1
    elif suite == "single":
        metrics = single_judge(client, ITEMS).metrics
        assert metrics["n"] == 1 and metrics["errors"] in (0, 1)
    else:
        metrics = alpaca_judge(client, [{**ITEMS[0], "baseline": "5"}], n_bootstrap=5).metrics
        assert metrics["n"] == 1 and metrics["errors"] in (0, 1)
        rate = metrics.get("win_rate")  # absent when the one item is an error
        assert rate is None or math.isnan(rate) or 0 <= rate <= 1
    stored = len(ReplyCache(cache_dir))
    assert stored == client.stats.calls - client.stats.failures  # only parsed replies are kept


def test_a_non_finite_logprob_in_a_reply_is_cached_or_refused_not_a_crash(tmp_path, served):
    """Found by fuzzing: a reply whose logprobs hold -inf or NaN (JSON -Infinity/NaN, which some servers
    send) parsed, then failed to be stored: the cache writes strict JSON."""
    judge, url = served
    top = {"1": float("-inf"), "2": -0.1, "x": float("nan")}
    judge.result = _result("2", [("2", -0.1, top)])
    client = JudgeClient(url, "fuzz", max_retries=0, cache_dir=tmp_path, backoff_s=0.0)
    metrics = alpaca_judge(client, [{**ITEMS[0], "baseline": "5"}], n_bootstrap=5).metrics
    # P("1") = 0 in both orders: the model (output 2 in baseline_first, output 1 in candidate_first)
    # gets probability 1 in one order and 0 in the other
    assert metrics["errors"] == 0 and metrics["win_rate"] == pytest.approx(0.5)
    assert len(ReplyCache(tmp_path)) == 2
    again = JudgeClient(url, "fuzz", max_retries=0, cache_dir=tmp_path, backoff_s=0.0)
    assert alpaca_judge(again, [{**ITEMS[0], "baseline": "5"}], n_bootstrap=5).metrics == metrics
    assert again.stats.calls == 0 and again.stats.cache_hits == 2
