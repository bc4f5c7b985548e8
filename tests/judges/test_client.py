"""JudgeClient through the real openai client against real local HTTP servers (harness.serve.server)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from harness.errors import HarnessError
from harness.serve.server import serve_in_background
from judges.client import JudgeClient, Reply
from tests.scripted_judge import ScriptedJudge, by_item

SECRET = "sk-test-DO-NOT-STORE-4f1c9a"


def has_verdict(reply: Reply) -> bool:
    return "[[" in reply.text


def msgs(item: str) -> list[dict]:
    return [{"role": "system", "content": "judge"}, {"role": "user", "content": item}]


def client(server, tmp_path=None, **kw) -> JudgeClient:
    kw = {"concurrency": 4, "max_retries": 3, "timeout_s": 0.4, "backoff_s": 0.001, "backoff_max_s": 0.01,
          "api_key": SECRET, **kw}
    return JudgeClient(server.base_url, "judge-m", cache_dir=tmp_path, **kw)


SCRIPTS = {
    "a": [],                         # 1 call
    "b": ["500"],                    # 2 calls, 1 retry
    "c": ["429", "503"],             # 3 calls, 2 retries
    "d": ["slow"],                   # timed out, then ok: 2 calls
    "e": ["garbage", "noshape"],     # 3 calls
    "f": ["invalid"],                # parser rejects, then ok: 2 calls
    "g": ["500", "invalid", "500", "429"],  # 4 calls = 1 + max_retries(3): gives up
}


def test_retries_and_failures_are_counted_exactly(tmp_path):
    judge = ScriptedJudge(SCRIPTS, slow_s=1.0)
    with serve_in_background(judge) as server:
        c = client(server, tmp_path)
        replies = c.complete_all([(msgs(k), {}) for k in SCRIPTS], valid=has_verdict)
    assert [r is None for r in replies] == [False] * 6 + [True]
    assert [r.text for r in replies[:6]] == [f"VERDICT {k} [[A]]" for k in "abcdef"]
    assert dict(judge.received) == {"a": 1, "b": 2, "c": 3, "d": 2, "e": 3, "f": 2, "g": 4}
    assert c.stats.calls == 17 and c.stats.retries == 10 and c.stats.failures == 1
    assert c.stats.cache_hits == 0
    # usage of answered calls: prompt "judge" + item = 2 words; completion = 2 tokens, "invalid" 5 words
    answered = 6 + 1 + 1  # ok replies + two "invalid" bodies (f, g); "slow" timed out before its body
    assert c.stats.prompt_tokens == 2 * answered
    assert c.stats.completion_tokens == 2 * 6 + 5 * 2


def test_rerun_makes_no_call_for_items_that_succeeded(tmp_path):
    judge = ScriptedJudge(SCRIPTS, slow_s=1.0)
    with serve_in_background(judge) as server:
        first = client(server, tmp_path)
        first.complete_all([(msgs(k), {}) for k in SCRIPTS], valid=has_verdict)
        judge.received.clear()
        second = client(server, tmp_path)
        replies = second.complete_all([(msgs(k), {}) for k in SCRIPTS], valid=has_verdict)
        assert dict(judge.received) == {"g": 1}  # only the failed item is asked again (its script is spent)
        assert second.stats.calls == 1 and second.stats.cache_hits == 6 and second.stats.failures == 0
        assert all(r.cached for r in replies[:6]) and not replies[6].cached
        third = client(server, tmp_path)
        third.complete_all([(msgs(k), {}) for k in SCRIPTS], valid=has_verdict)
    assert third.stats.calls == 0 and third.stats.cache_hits == 7


def test_invalid_reply_is_never_cached(tmp_path):
    judge = ScriptedJudge({"x": ["invalid"] * 10})
    with serve_in_background(judge) as server:
        c = client(server, tmp_path, max_retries=1)
        assert c.complete_all([(msgs("x"), {})], valid=has_verdict) == [None]
        assert len(c.cache) == 0
        assert c.stats.calls == 2 and c.stats.retries == 1 and c.stats.failures == 1


def test_a_retry_resends_the_same_request(tmp_path):
    judge = ScriptedJudge({"x": ["500", "invalid"]})
    with serve_in_background(judge) as server:
        c = client(server, tmp_path, default_params={"temperature": 0.7})
        (reply,) = c.complete_all([(msgs("x"), {"seed": 5, "max_tokens": 9})], valid=has_verdict)
    sent = by_item(judge.bodies)["x"]
    assert len(sent) == 3 and reply is not None
    assert sent[0] == sent[1] == sent[2]
    assert sent[0]["seed"] == 5 and sent[0]["temperature"] == 0.7 and sent[0]["model"] == "judge-m"


def test_cache_key_covers_every_sampling_param(tmp_path):
    judge = ScriptedJudge({})
    variants = [{}, {"seed": 1}, {"seed": 2}, {"n": 2}, {"temperature": 0.5}, {"logprobs": True},
                {"logprobs": True, "top_logprobs": 2}, {"seed": None}]  # seed None == not sent == {}
    with serve_in_background(judge) as server:
        c = client(server, tmp_path)
        for params in variants:
            c.complete_all([(msgs("x"), params)])
        assert c.stats.calls == 7 and c.stats.cache_hits == 1
        other_model = JudgeClient(server.base_url, "another-model", cache_dir=tmp_path, api_key=SECRET)
        other_model.complete_all([(msgs("x"), {})])
        assert other_model.stats.calls == 1


def test_logprobs_and_n_choices_come_back(tmp_path):
    judge = ScriptedJudge({})
    with serve_in_background(judge) as server:
        c = client(server, tmp_path)
        (r,) = c.complete_all([(msgs("x"), {"logprobs": True, "top_logprobs": 2, "n": 3, "seed": 7})])
        (again,) = client(server, tmp_path).complete_all(
            [(msgs("x"), {"logprobs": True, "top_logprobs": 2, "n": 3, "seed": 7})])
    assert r.top_logprobs == [{"VERDICT": -0.01}, {"[[A]]": -0.105, "[[B]]": -2.303}]
    assert r.texts == ("VERDICT x [[A]]",) * 3
    assert [b["seed"] for b in judge.bodies] == [7, 8, 9]  # n calls of the responder, seed + i each
    assert again == Reply(r.text, r.top_logprobs, True, r.texts)


def test_concurrency_is_bounded_by_the_semaphore():
    judge = ScriptedJudge({}, latency_s=0.05)
    with serve_in_background(judge) as server:
        c = client(server, None, concurrency=3, timeout_s=5)
        replies = c.complete_all([(msgs(str(i)), {}) for i in range(12)])
    assert all(r is not None for r in replies)
    assert judge.max_in_flight == 3


def test_api_key_never_reaches_the_cache_file(tmp_path):
    judge = ScriptedJudge({})
    with serve_in_background(judge) as server:
        c = client(server, tmp_path)
        c.complete_all([(msgs(str(i)), {}) for i in range(5)])
        assert SECRET not in repr(c)
        c.cache.close()
    files = list(tmp_path.iterdir())
    assert files and all(SECRET.encode() not in f.read_bytes() for f in files)


def test_rejected_key_is_a_clear_error_without_the_key():
    def reject(body):
        from harness.serve.server import ReplyError
        raise ReplyError(401)

    with serve_in_background(reject) as server:
        c = client(server)
        with pytest.raises(HarnessError, match="HTTP 401") as info:
            c.complete_all([(msgs("x"), {})])
    assert SECRET not in str(info.value)


def test_unreachable_endpoint_counts_a_failure():
    with serve_in_background(ScriptedJudge({})) as server:
        url = server.base_url
    c = JudgeClient(url, "m", max_retries=2, timeout_s=0.5, backoff_s=0.001)
    assert c.complete_all([(msgs("x"), {})]) == [None]
    assert c.stats.calls == 3 and c.stats.retries == 2 and c.stats.failures == 1


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    c = JudgeClient("http://127.0.0.1:9/v1", "m", backoff_s=0.1, backoff_max_s=0.5)
    for attempt, base in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        waits = [c._backoff(attempt) for _ in range(200)]
        assert base * 0.5 <= min(waits) and max(waits) <= base
        assert max(waits) - min(waits) > 0.2 * base  # jittered, not constant


def test_complete_is_usable_from_async_code():
    async def run(c):
        return await asyncio.gather(c.complete(msgs("p")), c.complete(msgs("q")))

    with serve_in_background(ScriptedJudge({})) as server:
        c = client(server)
        replies = asyncio.run(run(c))
    assert [r.text for r in replies] == ["VERDICT p [[A]]", "VERDICT q [[A]]"]


def test_api_key_never_reaches_the_logs_even_at_debug(caplog):
    caplog.set_level(logging.DEBUG)  # every logger: harness's, openai's, httpx's
    judge = ScriptedJudge({"x": ["500", "invalid"], "y": ["500"] * 9})
    with serve_in_background(judge) as server:
        c = client(server, max_retries=2)
        c.complete_all([(msgs("x"), {}), (msgs("y"), {})], valid=has_verdict)
    assert c.stats.failures == 1 and "gave up" in caplog.text and "HTTP Request" in caplog.text
    assert SECRET not in caplog.text


def test_a_429_with_retry_after_is_waited_out():
    judge = ScriptedJudge({"x": ["wait"]})
    with serve_in_background(judge) as server:
        c = client(server)  # backoff alone would wait at most 1 ms
        t0 = time.monotonic()
        (reply,) = c.complete_all([(msgs("x"), {})])
        waited = time.monotonic() - t0
    assert reply is not None and c.stats.calls == 2 and c.stats.retries == 1
    assert waited >= 0.4
