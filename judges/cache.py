"""The on-disk cache of judge replies (DESIGN.md, "Core ideas": every successful call is cached).

One sqlite file, ``<cache_dir>/judge_replies.sqlite``, in WAL mode with a busy
timeout, so several processes can judge into the same cache at once: sqlite
serializes the writers and readers never block.  Each ``put`` is its own
committed transaction (autocommit), so a killed run loses no reply that had
been stored.  Only the reply is stored, under the key of the request; the key
is a hash, and neither the key material nor the api key is written.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

CACHE_FILE = "judge_replies.sqlite"
KEY_LAYOUT = "judge-request-v1"  # bump when the key material changes meaning


def canonical_json(value) -> str:
    """Sorted keys, no whitespace, ASCII only: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def request_key(base_url: str, model: str, messages: list[dict], params: dict) -> str:
    """sha256 of (endpoint URL, model, messages, every sampling param incl. n, seed, logprobs).

    ``base_url`` is the endpoint's URL, or for a server harness starts on a fresh
    port each run, its stable identity (``harness.serve.endpoint.cache_identity``).

    ``params`` holds what is sent, None values already dropped by the caller
    (an omitted param and an explicit null send the same request).
    """
    material = {"layout": KEY_LAYOUT, "url": base_url.rstrip("/"), "model": model,
                "messages": messages, "params": params}
    return hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()


def _retry_while_locked(step: Callable[[], None], timeout_s: float) -> None:
    """Run ``step``, again after a short sleep while sqlite says the database is locked, up to ``timeout_s``.

    Two processes opening a fresh cache at once both hold a shared lock while
    they switch it to WAL.  sqlite does not call its busy handler where waiting
    could deadlock (sqlite3_busy_handler docs); it fails one of them at once
    with "database is locked", and the caller is to retry.  Seen as a rare
    failure of tests/judges/test_cache.py on a loaded 2-core machine.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.25)


class ReplyCache:
    """Thread-safe get/put of JSON replies by key; one connection per instance, guarded by a lock."""

    def __init__(self, cache_dir: Path, busy_timeout_s: float = 60.0):
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / CACHE_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        _retry_while_locked(self._set_up, busy_timeout_s)

    def _set_up(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":  # sqlite reports the old mode when it could not switch
            raise sqlite3.OperationalError(f"database is locked (journal mode still {mode})")
        self._db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a killed process
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, reply: dict) -> None:
        """Store and commit at once; the same key twice keeps the first (both are valid replies).

        The reply is stored as received: a logprob of -inf or NaN (JSON's -Infinity/NaN, which
        some servers send) is written in the form Python's json reads back, not refused.
        """
        text = json.dumps(reply, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO replies (key, reply) VALUES (?, ?)", (key, text))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
