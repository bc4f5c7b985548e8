"""The one judge client: OpenAI chat completions, async, cached, with harness's own retries.

``JudgeClient.complete`` sends one chat-completions request through
``openai.AsyncOpenAI`` (its own retries set to 0, so every HTTP request is
counted here) and

- answers from the on-disk cache (``judges.cache``) when the same request
  (endpoint URL, model, messages, every sampling param) succeeded before; a
  server on a fresh port each run (harness's toy judge, vllm) counts by the
  stable ``cache_identity`` its caller passes, not its per-run port;
- retries, up to ``max_retries`` times with exponential backoff and jitter
  (at least the server's ``Retry-After`` seconds, up to a minute),
  on 429, 5xx, timeouts, connection errors, malformed bodies, and replies for
  which the caller's ``valid`` is False.  **A retry resends exactly the same
  request** (same messages, params and seed); nothing is varied;
- stores only valid replies, under the key of that (original and only) request,
  so a re-run makes no call for an item that succeeded and retries the rest;
- gives up with ``None`` (counted in ``failures``) when retries run out or the
  endpoint rejects the request (other 4xx).  401/403/404 (bad key, wrong model
  or URL) raise ``HarnessError``: every other request would fail the same way.

Counters (``stats``): ``calls`` = HTTP requests sent, ``cache_hits``,
``retries`` = requests re-sent, ``failures`` = items given up,
``prompt_tokens`` / ``completion_tokens`` from ``usage`` of every answered call.

The api key is passed to the openai client only: it is never logged, put in
the cache key or stored.  Local servers get the placeholder ``EMPTY``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import openai

from harness.errors import HarnessError
from judges.cache import ReplyCache, request_key

log = logging.getLogger(__name__)
PLACEHOLDER_KEY = "EMPTY"
RETRY_AFTER_MAX_S = 60.0  # a Retry-After longer than this is not waited out in full
GAVE_UP_SHOWN = 3  # "gave up" warnings printed per client; later failures are only counted
FATAL_STATUS = {401: "the api key was rejected", 403: "access denied", 404: "model or URL not found"}


@dataclass(frozen=True)
class Reply:
    text: str
    top_logprobs: list[dict[str, float]] | None  # [j] = {token: logprob} of generated token j's top alternatives
    cached: bool
    texts: tuple[str, ...] = ()                   # every choice's text when n > 1 (texts[0] == text)


@dataclass
class ClientStats:
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @property
    def requests(self) -> int:
        """Requests asked for: cache hits plus those sent (each sent request's first call is not a retry)."""
        return self.cache_hits + self.calls - self.retries


@dataclass
class _Attempt:
    reply: Reply | None = None
    retryable: bool = False
    reason: str = ""
    retry_after_s: float | None = None  # the server's Retry-After, when it sent one


def _retry_after(exc: openai.APIStatusError) -> float | None:
    """Seconds from a Retry-After header in its seconds form (the HTTP-date form is ignored)."""
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _reply_from(completion) -> Reply:
    """Our Reply from an openai ChatCompletion; raises ValueError on a malformed one."""
    choices = getattr(completion, "choices", None)
    if not choices or choices[0].message is None:
        raise ValueError("the response has no choices")
    texts = tuple(c.message.content or "" for c in choices)
    lp = choices[0].logprobs
    top = None
    if lp is not None and lp.content is not None:
        top = [{t.token: t.logprob for t in (e.top_logprobs or [])} or {e.token: e.logprob} for e in lp.content]
    return Reply(texts[0], top, False, texts)


def _reply_json(reply: Reply) -> dict:
    return {"text": reply.text, "top_logprobs": reply.top_logprobs, "texts": list(reply.texts)}


def _reply_load(data: dict) -> Reply:
    return Reply(data["text"], data.get("top_logprobs"), True, tuple(data.get("texts") or (data["text"],)))


class JudgeClient:
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, concurrency: int = 8,
                 max_retries: int = 4, timeout_s: float = 60.0, cache_dir: Path | None = None,
                 default_params: dict | None = None, backoff_s: float = 0.5, backoff_max_s: float = 20.0,
                 cache_identity: str | None = None):
        self.base_url = base_url.rstrip("/")
        # the endpoint as cache keys see it: the URL, or a stable name the caller gives a server on a fresh
        # port (harness passes harness.serve.endpoint.cache_identity)
        self.cache_identity = cache_identity or self.base_url
        self.model = model
        self._api_key = api_key or PLACEHOLDER_KEY
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.default_params = dict(default_params or {})
        self.cache = ReplyCache(cache_dir) if cache_dir is not None else None
        self.stats = ClientStats()
        self.last_failure = ""
        self._loop = None
        self._client: openai.AsyncOpenAI | None = None
        self._sem: asyncio.Semaphore | None = None

    def __repr__(self) -> str:  # no key in reprs, ever
        return f"JudgeClient({self.base_url!r}, {self.model!r}, concurrency={self.concurrency})"

    def _bound(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        """The openai client and semaphore of the running event loop (each loop needs its own)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, max_retries=0,
                                              timeout=self.timeout_s)
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._client, self._sem

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
        self._client, self._loop = None, None

    async def complete(self, messages: list[dict], *, valid: Callable[[Reply], bool] = lambda r: True,
                       **params) -> Reply | None:
        """One judged request: cached, retried; None when it gave up (the caller counts an error)."""
        sent = {k: v for k, v in {**self.default_params, **params}.items() if v is not None}
        key = request_key(self.cache_identity, self.model, messages, sent)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cache_hits += 1
            return _reply_load(hit)
        outcome = _Attempt()
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(max(self._backoff(attempt), min(outcome.retry_after_s or 0.0,
                                                                    RETRY_AFTER_MAX_S)))
            outcome = await self._attempt(messages, sent, valid)
            if outcome.reply is not None:
                if self.cache is not None:
                    self.cache.put(key, _reply_json(outcome.reply))
                return outcome.reply
            log.debug("judge call %d/%d failed: %s", attempt + 1, self.max_retries + 1, outcome.reason)
            if not outcome.retryable:
                break
        self.stats.failures += 1
        self.last_failure = outcome.reason
        # A dead endpoint fails every request: print the first few, count the rest (check_failures says it).
        if self.stats.failures <= GAVE_UP_SHOWN:
            log.warning("judge request gave up after %d call(s): %s%s", attempt + 1, outcome.reason,
                        " (further failures are counted, not printed)" if self.stats.failures == GAVE_UP_SHOWN
                        else "")
        return None

    def check_failures(self, max_error_rate: float, what: str) -> None:
        """Raise when every request failed, or more than ``max_error_rate`` of them (judge.max_error_rate).

        A judge that cannot be reached is not a result: its verdicts would all be errors."""
        failed, asked = self.stats.failures, self.stats.requests
        if not failed or (failed < asked and failed <= max_error_rate * asked):
            return
        unreachable = self.last_failure in ("APIConnectionError", "APITimeoutError")
        how = (f"the judge endpoint {self.base_url} is unreachable ({self.last_failure})" if unreachable
               else f"last failure: {self.last_failure}")
        share = "all" if failed == asked else f"{failed / asked:.0%}, above judge.max_error_rate {max_error_rate}"
        raise HarnessError(f"{what}: {failed} of {asked} judge requests failed ({share}) with model "
                           f"{self.model!r}; {how}")

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: min(cap, base x 2^(attempt-1)) x uniform(0.5, 1)."""
        return min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    async def _attempt(self, messages, sent: dict, valid) -> _Attempt:
        client, sem = self._bound()
        async with sem:
            self.stats.calls += 1
            try:
                completion = await client.chat.completions.create(model=self.model, messages=messages, **sent)
                reply = _reply_from(completion)
            except openai.APIStatusError as exc:
                return self._status_failure(exc)
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:  # timeout is a connection error
                return _Attempt(retryable=True, reason=type(exc).__name__)
            except (ValueError, openai.APIResponseValidationError) as exc:  # garbage or malformed body
                return _Attempt(retryable=True, reason=f"malformed response ({type(exc).__name__})")
        usage = getattr(completion, "usage", None)
        if usage is not None:
            self.stats.prompt_tokens += usage.prompt_tokens or 0
            self.stats.completion_tokens += usage.completion_tokens or 0
        if not valid(reply):
            return _Attempt(retryable=True, reason=f"reply rejected by the parser: {reply.text[:80]!r}")
        return _Attempt(reply=reply)

    def _status_failure(self, exc: openai.APIStatusError) -> _Attempt:
        status = exc.status_code
        if status in FATAL_STATUS:
            raise HarnessError(f"judge endpoint {self.base_url} (model {self.model!r}): HTTP {status}, "
                               f"{FATAL_STATUS[status]}")
        return _Attempt(retryable=status == 429 or status >= 500, reason=f"HTTP {status}",
                        retry_after_s=_retry_after(exc))

    async def complete_many(self, requests: list[tuple[list[dict], dict]], valid=lambda r: True
                            ) -> list[Reply | None]:
        return list(await asyncio.gather(*(self.complete(m, valid=valid, **p) for m, p in requests)))

    def complete_all(self, requests: list[tuple[list[dict], dict]], valid=lambda r: True
                     ) -> list[Reply | None]:
        """Sync: every (messages, params) request concurrently (``concurrency`` at a time), in order."""
        async def run():
            try:
                return await self.complete_many(requests, valid)
            finally:
                await self.aclose()

        return asyncio.run(run())


def served_model(base_url: str, api_key: str | None, timeout_s: float) -> str:
    """The first model the endpoint at ``base_url`` lists (local servers serve one); for a null judge.model."""
    try:
        with openai.OpenAI(base_url=base_url, api_key=api_key or PLACEHOLDER_KEY, max_retries=0,
                           timeout=min(timeout_s, 30.0)) as c:
            models = [m.id for m in c.models.list()]
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        raise HarnessError(f"the judge endpoint {base_url} is unreachable ({type(exc).__name__}): "
                           f"is a server running there? (judge.base_url / --judge-url)") from exc
    except openai.OpenAIError as exc:
        raise HarnessError(f"judge.model is null and {base_url}/models could not be listed "
                           f"({type(exc).__name__}); set judge.model") from exc
    if not models:
        raise HarnessError(f"judge.model is null and {base_url}/models lists no model; set judge.model")
    return models[0]
