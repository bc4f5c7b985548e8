"""The judge reply cache: keys, several writing processes, a killed writer."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from judges.cache import CACHE_FILE, ReplyCache, _retry_while_locked, canonical_json, request_key

ROOT = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent("""
    import os, signal, sys, time
    from judges.cache import ReplyCache
    cache_dir, tag, count, shared, die = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    cache = ReplyCache(cache_dir)
    go = os.path.join(cache_dir, "go")
    while not os.path.exists(go):   # start writing together, so the writes really interleave
        time.sleep(0.005)
    for i in range(count):
        cache.put(f"{tag}-{i}", {"text": f"{tag} {i}"})
        cache.put(f"shared-{i % shared}", {"text": "shared"})
    if die == "kill":
        os.kill(os.getpid(), signal.SIGKILL)   # no close, no cleanup: what a killed run leaves
    cache.close()
""")


def _writer(cache_dir: Path, tag: str, count: int, shared: int = 10, die: str = "no") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(cache_dir), tag, str(count), str(shared), die],
                            env=env, stderr=subprocess.PIPE, text=True)


def test_key_is_sha256_of_canonical_request_json():
    messages = [{"role": "user", "content": "é?"}]
    params = {"temperature": 0.0, "seed": 3, "n": 1}
    expected = hashlib.sha256(json.dumps(
        {"layout": "judge-request-v1", "url": "http://h:1/v1", "model": "m", "messages": messages,
         "params": {"n": 1, "seed": 3, "temperature": 0.0}},
        sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert request_key("http://h:1/v1/", "m", messages, params) == expected
    assert request_key("http://h:1/v1", "m", messages, dict(reversed(params.items()))) == expected
    assert request_key("http://h:2/v1", "m", messages, params) != expected
    assert request_key("http://h:1/v1", "m", messages, {**params, "seed": 4}) != expected
    assert canonical_json({"b": 1, "a": [1.5, "x"]}) == '{"a":[1.5,"x"],"b":1}'


def test_put_get_and_first_write_wins(tmp_path):
    cache = ReplyCache(tmp_path)
    assert cache.get("k") is None
    cache.put("k", {"text": "one"})
    cache.put("k", {"text": "two"})
    assert cache.get("k") == {"text": "one"} and len(cache) == 1
    cache.close()
    assert ReplyCache(tmp_path).get("k") == {"text": "one"}  # persisted


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    procs = [_writer(tmp_path, tag, 1000) for tag in ("p", "q")]
    (tmp_path / "go").touch()
    for p in procs:
        _, err = p.communicate(timeout=300)   # generous: a loaded 2-core CI machine
        assert p.returncode == 0, f"writer exited {p.returncode}:\n{err}"
    cache = ReplyCache(tmp_path)
    assert len(cache) == 1000 + 1000 + 10
    assert all(cache.get(f"{t}-{i}") == {"text": f"{t} {i}"} for t in "pq" for i in range(1000))


def test_a_killed_writer_keeps_every_finished_put(tmp_path):
    p = _writer(tmp_path, "k", 40, die="kill")
    (tmp_path / "go").touch()
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    cache = ReplyCache(tmp_path)
    assert len(cache) == 40 + 10
    assert cache.get("k-39") == {"text": "k 39"}
    assert (tmp_path / CACHE_FILE).exists()


def test_set_up_is_retried_while_sqlite_says_locked_and_only_then():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")

    _retry_while_locked(flaky, timeout_s=5)
    assert len(calls) == 3

    def broken():
        calls.append(1)
        raise sqlite3.OperationalError("no such table: replies")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        _retry_while_locked(broken, timeout_s=5)
    assert len(calls) == 1   # not a lock: raised at once

    def always_locked():
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _retry_while_locked(always_locked, timeout_s=0.05)   # gives up at the timeout


def test_many_processes_opening_a_fresh_cache_at_once(tmp_path):
    """The race behind the retry: every writer opens the new sqlite file at the same moment."""
    opener = textwrap.dedent("""
        import os, sys, time
        from judges.cache import ReplyCache
        d, tag = sys.argv[1], sys.argv[2]
        while not os.path.exists(os.path.join(d, "go")):
            time.sleep(0.001)
        cache = ReplyCache(d)
        cache.put(tag, {"text": tag})
        cache.close()
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_ in range(3):
        d = tmp_path / f"r{round_}"
        d.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", opener, str(d), f"w{k}"], env=env,
                                  stderr=subprocess.PIPE, text=True) for k in range(6)]
        time.sleep(0.5)
        (d / "go").touch()
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, f"opener exited {p.returncode}:\n{err}"
        assert len(ReplyCache(d)) == 6
