"""A small OpenAI-compatible chat-completions server over a Python function.

The judging side talks only the OpenAI protocol (DESIGN.md, "Core ideas"), so
every local judge (the toy rubric judge, a local HF model, the scripted servers
in the tests) is a ``Responder``: a function from the request body to a
``ChatResult``.  This module turns one into a real HTTP server (stdlib
``ThreadingHTTPServer``, one thread per connection, HTTP/1.1 keep-alive) with

- ``POST /v1/chat/completions``: OpenAI's response shape, ``choices[i].logprobs.content``
  when ``logprobs`` is requested, and ``usage``;
- ``GET /v1/models`` and ``GET /health``.

A responder may raise ``ReplyError`` to answer with a chosen status and body
(the tests use it to inject 429s, 500s and garbage); any other exception is a 500.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)  # top alternatives, the token itself included


@dataclass
class ChatResult:
    text: str
    token_logprobs: list[TokenLogprob] | None = None
    prompt_tokens: int | None = None      # None: approximated by whitespace words of the messages
    completion_tokens: int | None = None  # None: len(token_logprobs), else whitespace words of text


Responder = Callable[[dict], ChatResult]


class ReplyError(Exception):
    """Raised by a responder to answer with ``status`` and a raw ``body`` instead of a completion."""

    def __init__(self, status: int, body: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = dict(headers or {})
        self.body = body if body is not None else json.dumps(
            {"error": {"message": f"injected HTTP {status}", "type": "server_error", "code": status}})


def _words(text: str) -> int:
    return len(text.split())


def _prompt_words(messages) -> int:
    total = 0
    for m in messages or []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            total += _words(content)
        elif isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
            total += sum(_words(p.get("text", "")) for p in content if isinstance(p, dict))
    return total


def _token_entry(t: TokenLogprob, k: int) -> dict:
    top = sorted(t.top.items(), key=lambda kv: -kv[1])[:k]
    return {
        "token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode("utf-8")),
        "top_logprobs": [{"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8"))} for tok, lp in top],
    }


def _choice(index: int, result: ChatResult, body: dict) -> dict:
    choice = {"index": index, "message": {"role": "assistant", "content": result.text},
              "finish_reason": "stop", "logprobs": None}
    if body.get("logprobs") and result.token_logprobs is not None:
        k = int(body.get("top_logprobs") or 0)
        choice["logprobs"] = {"content": [_token_entry(t, k) for t in result.token_logprobs], "refusal": None}
    return choice


def _completion_tokens(result: ChatResult) -> int:
    if result.completion_tokens is not None:
        return result.completion_tokens
    if result.token_logprobs is not None:
        return len(result.token_logprobs)
    return _words(result.text)


def _choice_body(body: dict, i: int) -> dict:
    """The request as one choice sees it: n=1, and choice i of a seeded request gets seed + i."""
    one = dict(body, n=1)
    if body.get("seed") is not None:
        one["seed"] = int(body["seed"]) + i
    return one


def chat_completion(responder: Responder, body: dict, model_name: str) -> dict:
    """The OpenAI ``chat.completion`` object for ``body``: the responder is called once per choice."""
    n = int(body.get("n") or 1)
    results = [responder(_choice_body(body, i)) if n > 1 else responder(body) for i in range(n)]
    prompt = results[0].prompt_tokens if results[0].prompt_tokens is not None else _prompt_words(
        body.get("messages"))
    completion = sum(_completion_tokens(r) for r in results)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model") or model_name,
        "choices": [_choice(i, r, body) for i, r in enumerate(results)],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    }


def stream_events(completion: dict, include_usage: bool = False) -> str:
    """A finished ``chat.completion`` as the server-sent events of ``stream: true``.

    OpenAI's chunk protocol: per choice, a chunk with the role and the whole content as one
    delta (and its log-probs), then a chunk with the finish reason; with
    ``stream_options.include_usage`` a last chunk with no choices and the usage; then ``[DONE]``.
    """
    head = {k: completion[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    chunks = []
    for c in completion["choices"]:
        delta = {"role": "assistant", "content": c["message"]["content"]}
        chunks.append(head | {"choices": [{"index": c["index"], "delta": delta, "logprobs": c["logprobs"],
                                           "finish_reason": None}]})
        chunks.append(head | {"choices": [{"index": c["index"], "delta": {}, "logprobs": None,
                                           "finish_reason": c["finish_reason"]}]})
    if include_usage:
        chunks.append(head | {"choices": [], "usage": completion["usage"]})
    return "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"


def _error(status: int, message: str, kind: str = "invalid_request_error") -> tuple[int, str]:
    return status, json.dumps({"error": {"message": message, "type": kind, "code": status}})


def _make_handler(responder: Responder, model_name: str, quiet: bool):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so a concurrent client reuses connections
        # Headers and body go out as two writes; with Nagle on, the second waits for the client's
        # delayed ACK (~40 ms on Linux) on every keep-alive request.
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):
            if not quiet:
                sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

        def _send(self, status: int, payload: str, headers: dict[str, str] | None = None) -> None:
            data = payload.encode("utf-8")
            try:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if not any(name.lower() == "content-type" for name in (headers or {})):
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left: not our error
                self.close_connection = True

        def do_GET(self):
            path = self.path.split("?")[0].rstrip("/")
            if path == "/health":
                self._send(200, json.dumps({"status": "ok"}))
            elif path == "/v1/models":
                self._send(200, json.dumps({"object": "list", "data": [
                    {"id": model_name, "object": "model", "created": 0, "owned_by": "harness"}]}))
            else:
                self._send(*_error(404, f"no route GET {path}"))

        def do_POST(self):
            path = self.path.split("?")[0].rstrip("/")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if path != "/v1/chat/completions":
                return self._send(*_error(404, f"no route POST {path}"))
            self._send(*self._complete(raw))

        def _complete(self, raw: bytes) -> tuple:
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError as exc:
                return _error(400, f"request body is not JSON: {exc}")
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                return _error(400, "request body needs a 'messages' list")
            try:
                completion = chat_completion(responder, body, model_name)
                if body.get("stream"):
                    usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    return 200, stream_events(completion, usage), {"Content-Type": "text/event-stream"}
                return 200, json.dumps(completion)
            except ReplyError as exc:
                return exc.status, exc.body, exc.headers
            except Exception as exc:  # noqa: BLE001 - a broken responder is the server's fault: 500, and keep serving
                return _error(500, f"{type(exc).__name__}: {exc}", "server_error")

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True        # a slow answer in flight never blocks close()
    request_queue_size = 256     # bursts of concurrent connects (benchmarks at concurrency 32+)


class RunningServer:
    """A server running in a background thread; ``base_url`` ends in ``/v1``."""

    def __init__(self, httpd: _Server):
        self._httpd = httpd
        host, port = httpd.server_address[:2]
        self.host, self.port = host, port
        self.base_url = f"http://{host}:{port}/v1"
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"judge-server-{port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve_in_background(responder: Responder, host: str = "127.0.0.1", port: int = 0,
                        model_name: str = "local-judge", quiet: bool = True) -> RunningServer:
    """Start serving ``responder`` on ``host:port`` (0 = a free port) in a daemon thread."""
    return RunningServer(_Server((host, port), _make_handler(responder, model_name, quiet)))


def serve_forever(responder: Responder, host: str, port: int, model_name: str = "local-judge",
                  announce: Callable[[str], None] | None = None, quiet: bool = False) -> None:
    """Serve in the foreground until interrupted; ``announce`` gets the base URL once listening.

    Without ``quiet``, one access-log line per request goes to stderr."""
    httpd = _Server((host, port), _make_handler(responder, model_name, quiet))
    bound_host, bound_port = httpd.server_address[:2]
    if announce is not None:
        announce(f"http://{bound_host}:{bound_port}/v1")
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
