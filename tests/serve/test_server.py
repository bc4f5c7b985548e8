"""The OpenAI-compatible server over a responder: routes, response shape, logprobs, errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from harness.serve.server import ChatResult, TokenLogprob, chat_completion, serve_in_background


def echo(body: dict) -> ChatResult:
    text = f"seed={body.get('seed')} n={body.get('n')}"
    return ChatResult(text, [TokenLogprob("x", -0.5, {"x": -0.5, "y": -1.5, "z": -3.0})])


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _post(url: str, data: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_health_models_and_unknown_routes():
    with serve_in_background(echo, model_name="my-judge") as s:
        root = s.base_url[: -len("/v1")]
        assert _get(root + "/health") == (200, {"status": "ok"})
        status, models = _get(s.base_url + "/models")
        assert status == 200 and [m["id"] for m in models["data"]] == ["my-judge"]
        assert _get(root + "/nothing")[0] == 404
        assert _post(s.base_url + "/chat/completions", b"{not json")[0] == 400
        assert _post(s.base_url + "/chat/completions", b'{"model": "m"}')[0] == 400


def test_openai_client_reads_text_logprobs_and_usage():
    with serve_in_background(echo) as s:
        c = openai.OpenAI(base_url=s.base_url, api_key="EMPTY", max_retries=0)
        r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "a b c"}],
                                      logprobs=True, top_logprobs=2, seed=4)
        plain = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])
    assert r.choices[0].message.content == "seed=4 n=None"
    (tok,) = r.choices[0].logprobs.content
    assert (tok.token, tok.logprob, tok.bytes) == ("x", -0.5, [120])
    assert [(t.token, t.logprob) for t in tok.top_logprobs] == [("x", -0.5), ("y", -1.5)]  # top 2, best first
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 1, 4)
    assert plain.choices[0].logprobs is None  # not requested, not sent


def test_stream_true_gives_the_same_answer_as_chunks_to_the_openai_client():
    """The openai client's streaming reads the chunks; joined, they are the non-streamed answer."""
    with serve_in_background(echo) as s:
        c = openai.OpenAI(base_url=s.base_url, api_key="EMPTY", max_retries=0)
        ask = {"model": "m", "messages": [{"role": "user", "content": "a b c"}], "seed": 7, "n": 2}
        whole = c.chat.completions.create(**ask)
        chunks = list(c.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    texts = {0: "", 1: ""}
    finished = {}
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            finished[choice.index] = choice.finish_reason
    assert texts == {0: "seed=7 n=1", 1: "seed=8 n=1"} == {i: ch.message.content for i, ch in enumerate(whole.choices)}
    assert finished == {0: "stop", 1: "stop"}
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_n_choices_call_the_responder_n_times_with_seed_plus_i():
    out = chat_completion(echo, {"messages": [], "n": 3, "seed": 10}, "m")
    assert [c["message"]["content"] for c in out["choices"]] == ["seed=10 n=1", "seed=11 n=1", "seed=12 n=1"]
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    assert out["usage"]["completion_tokens"] == 3


def test_a_crashing_responder_is_a_500_and_the_server_keeps_serving():
    calls = []

    def flaky(body):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return ChatResult("fine")

    with serve_in_background(flaky) as s:
        c = openai.OpenAI(base_url=s.base_url, api_key="EMPTY", max_retries=0)
        with pytest.raises(openai.InternalServerError, match="boom"):
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].message.content == "fine"
