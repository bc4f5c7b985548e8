"""harness.cache: the stage and eval caches keep their layout and keys, so existing cache entries still hit."""

from __future__ import annotations

import json

from harness.cache import EVAL_CACHE_LAYOUT, EvalCache, EvalKey, StageCache, digest


def test_stage_cache_entry_is_complete_only_with_its_meta(tmp_path):
    cache = StageCache(tmp_path)
    assert cache.model_dir("k1") == tmp_path / "stages" / "k1" / "model"
    cache.model_dir("k1").mkdir(parents=True)
    assert cache.meta("k1") is None  # a checkpoint without meta.json: a killed run, trained again
    meta = {"run_id": "r", "trial_id": "t", "stage": "sft", "steps": 3}
    cache.mark_complete("k1", meta)
    assert cache.meta("k1") == meta
    assert json.loads((tmp_path / "stages" / "k1" / "meta.json").read_text()) == meta
    assert sorted(p.name for p in (tmp_path / "stages" / "k1").iterdir()) == ["meta.json", "model"]


def test_eval_key_is_the_layout_and_fields_in_order():
    """The key digest is digest([layout, model, reference, suite, options, generation, judge, baseline], 16);
    the value below was computed with that formula before the caches moved here."""
    key = EvalKey("m", "r", "arith", {"limit": 4}, {"n": 1}, None, None)
    assert EVAL_CACHE_LAYOUT == 3
    assert key.digest() == digest([3, "m", "r", "arith", {"limit": 4}, {"n": 1}, None, None], 16)
    assert key.digest() == "8ed78c8b8f451456"


def test_eval_cache_writes_one_entry_with_metrics_and_rows(tmp_path):
    cache = EvalCache(tmp_path)
    key = EvalKey("m", "r", "pairwise", {}, {"n": 1}, {"model": "j"}, "base:r")
    assert cache.metrics(key) is None
    cache.write(key, "pairwise", [{"id": "1", "output": "x"}], [{"id": "1", "verdict": "A"}], {"win_rate": 0.5})
    entry = tmp_path / "evals" / key.digest()
    assert cache.metrics(key) == {"win_rate": 0.5}
    assert cache.rows_file(key, "outputs", "pairwise") == entry / "outputs" / "pairwise.jsonl"
    assert [json.loads(line) for line in (entry / "judgments" / "pairwise.jsonl").read_text().splitlines()] == \
        [{"id": "1", "verdict": "A"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evals"]  # no temporary left beside it


def test_eval_cache_baselines_are_one_jsonl_file_per_identity(tmp_path):
    cache = EvalCache(tmp_path)
    identity = ["r", "arith", [("1", "q")], {"n": 1}]
    assert cache.baseline(identity) is None
    cache.write_baseline(identity, [{"id": "1", "output": "4"}])
    assert (tmp_path / "baselines" / "3fedf557dd1d8051.jsonl").is_file()
    assert cache.baseline(identity) == [{"id": "1", "output": "4"}]


def test_atomic_writes_from_two_hosts_never_share_a_temporary(tmp_path, monkeypatch):
    """On a shared file system two nodes may run processes with the same pid: the host name tells them apart."""
    import os
    import socket

    from harness.cache import atomic_path

    final = tmp_path / "entry.json"
    seen = []
    for host in ("node-a", "node-b"):
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        with atomic_path(final) as tmp:
            seen.append(tmp.name)
            tmp.write_text(host)
    assert seen == [f"entry.json.tmp-node-a-{os.getpid()}", f"entry.json.tmp-node-b-{os.getpid()}"]
    assert final.read_text() == "node-b" and sorted(p.name for p in tmp_path.iterdir()) == ["entry.json"]
