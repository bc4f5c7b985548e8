"""A scripted judge for transport tests: each item follows its own list of behaviours.

A request's item is its last message's content.  Each call pops the next
behaviour of that item's script (then ``ok`` once the script runs out), so
concurrent requests stay deterministic per item.  Behaviours:

- ``ok``: reply ``VERDICT <item> [[A]]`` with logprobs for the verdict token;
- ``invalid``: a reply with no verdict token;
- ``500`` / ``429`` / ``503``: that HTTP status;
- ``wait``: HTTP 429 with ``Retry-After: 0.4``;
- ``slow``: sleep ``slow_s`` (longer than the client's timeout), then reply ok;
- ``garbage``: HTTP 200 with a body that is not JSON;
- ``noshape``: HTTP 200 with JSON that is not a chat completion.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict

from harness.serve.server import ChatResult, ReplyError, TokenLogprob


class ScriptedJudge:
    def __init__(self, scripts: dict[str, list[str]], slow_s: float = 1.0, latency_s: float = 0.0):
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.slow_s, self.latency_s = slow_s, latency_s
        self.received: Counter = Counter()
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def _next(self, item: str) -> str:
        with self._lock:
            self.received[item] += 1
            script = self.scripts.get(item) or []
            return script.pop(0) if script else "ok"

    def __call__(self, body: dict) -> ChatResult:
        item = body["messages"][-1]["content"]
        with self._lock:
            self.bodies.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._respond(item, self._next(item))
        finally:
            with self._lock:
                self.in_flight -= 1

    def _respond(self, item: str, action: str) -> ChatResult:
        if self.latency_s:
            time.sleep(self.latency_s)
        if action.isdigit():
            raise ReplyError(int(action))
        if action == "wait":
            raise ReplyError(429, headers={"Retry-After": "0.4"})
        if action == "garbage":
            raise ReplyError(200, "<html>upstream proxy error{{")
        if action == "noshape":
            raise ReplyError(200, '{"status": "busy"}')
        if action == "slow":
            time.sleep(self.slow_s)
        if action == "invalid":
            return ChatResult(f"I cannot decide about {item}.")
        top = {"[[A]]": -0.105, "[[B]]": -2.303}
        return ChatResult(f"VERDICT {item} [[A]]", [TokenLogprob("VERDICT", -0.01, {"VERDICT": -0.01}),
                                                     TokenLogprob("[[A]]", -0.105, top)])


def by_item(bodies: list[dict]) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for b in bodies:
        out[b["messages"][-1]["content"]].append(b)
    return out
