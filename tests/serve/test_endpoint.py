"""judge_endpoint and the vllm launcher, with a fake `vllm` executable on PATH (a real process and server)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import get_args

import openai
import pytest

from harness.config.spec import JudgeSpec
from harness.errors import HarnessError
from harness.serve.endpoint import BACKENDS, judge_client, judge_endpoint
from harness.serve.server import serve_in_background
from harness.serve.vllm import vllm_server
from judges.client import JudgeClient
from tests.scripted_judge import ScriptedJudge

ROOT = Path(__file__).resolve().parents[2]

FAKE_VLLM = """#!{python}
import json, os, sys, time
sys.path.insert(0, {root!r})
args = sys.argv[1:]
with open(os.environ["FAKE_VLLM_RECORD"], "w") as fh:
    json.dump({{"argv": args, "pid": os.getpid()}}, fh)
mode = os.environ.get("FAKE_VLLM_MODE", "ok")
if mode == "crash":
    print("RuntimeError: no CUDA GPUs are available", flush=True)
    sys.exit(3)
if mode == "hang":
    time.sleep(600)
time.sleep(0.3)  # loading weights: /health is refused for a while
from harness.serve.server import ChatResult, serve_forever
host, port = args[args.index("--host") + 1], int(args[args.index("--port") + 1])
serve_forever(lambda body: ChatResult("fake vllm says [[B]]"), host, port, model_name=args[1])
"""


def _spec(**kw):
    base = {"base_url": None, "model": "org/judge-7b", "backend": "vllm", "api_key_env": "NO_SUCH_KEY_VAR",
            "concurrency": 2, "max_retries": 0, "timeout_s": 5.0, "temperature": 0.0}
    return SimpleNamespace(**{**base, **kw})


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "vllm"
    exe.write_text(FAKE_VLLM.format(python=sys.executable, root=str(ROOT)))
    exe.chmod(0o755)
    record = tmp_path / "record.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    return record


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_vllm_backend_starts_waits_for_health_serves_and_stops(fake_vllm, tmp_path):
    with judge_endpoint(_spec(), tmp_path / "cache") as url:
        rec = json.loads(fake_vllm.read_text())
        port = rec["argv"][rec["argv"].index("--port") + 1]
        assert rec["argv"][:2] == ["serve", "org/judge-7b"] and "--host" in rec["argv"]
        assert url == f"http://127.0.0.1:{port}/v1"
        client = judge_client(_spec(), url, None)
        (reply,) = client.complete_all([([{"role": "user", "content": "which?"}], {})])
        assert reply.text == "fake vllm says [[B]]" and _alive(rec["pid"])
    assert not _alive(rec["pid"])
    assert list((tmp_path / "cache" / "vllm").glob("vllm-serve-*.log"))


def test_vllm_that_exits_early_is_an_error_with_its_log(fake_vllm, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_VLLM_MODE", "crash")
    with pytest.raises(HarnessError, match=r"(?s)exited with code 3.*no CUDA GPUs"), judge_endpoint(_spec(), tmp_path):
        pass


def test_vllm_never_healthy_times_out_and_is_stopped(fake_vllm, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_VLLM_MODE", "hang")
    t0 = time.monotonic()
    with pytest.raises(HarnessError, match="not healthy"), vllm_server("m", log_dir=tmp_path, health_timeout_s=2.0,
                                                                   grace_s=2.0):
        pass
    assert time.monotonic() - t0 < 8
    assert not _alive(json.loads(fake_vllm.read_text())["pid"])


def test_vllm_not_installed_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no vllm here
    with pytest.raises(HarnessError, match="`vllm` command is not installed"), judge_endpoint(_spec(), tmp_path):
        pass


def test_base_url_is_used_as_is_and_conflicts_with_vllm():
    with judge_endpoint(_spec(backend="openai", base_url="https://api.example/v1"), None) as url:
        assert url == "https://api.example/v1"
    with pytest.raises(HarnessError, match="judge.base_url"), judge_endpoint(_spec(base_url="http://x/v1"), None):
        pass


def _judge_once(spec, cache_dir) -> JudgeClient:
    with judge_endpoint(spec, cache_dir) as url:
        client = judge_client(spec, url, cache_dir / "judge")
        (reply,) = client.complete_all([([{"role": "user", "content": "hello"}], {})])
        assert reply is not None
    return client


def test_null_base_url_serves_the_embedded_toy_judge(monkeypatch, tmp_path):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    spec = _spec(backend="openai", model=None)
    with judge_endpoint(spec, None) as url:
        client = judge_client(spec, url, None)
        assert url.startswith("http://127.0.0.1:") and client.model == "toy-judge"
        (reply,) = client.complete_all([([{"role": "user", "content": "hello"}], {})])
        assert reply is not None and client.stats.calls == 1
    with pytest.raises(openai.APIConnectionError):  # stopped with the context
        openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=2).models.list()


@pytest.mark.parametrize("backend", ["toy", "vllm"])
def test_servers_harness_starts_hit_the_cache_on_rerun_despite_a_new_port(backend, fake_vllm, tmp_path):
    spec = _spec(backend="openai", model=None) if backend == "toy" else _spec()
    first, second = _judge_once(spec, tmp_path), _judge_once(spec, tmp_path)
    assert first.base_url != second.base_url  # a fresh port each run
    assert (first.stats.calls, second.stats.calls, second.stats.cache_hits) == (1, 0, 1)


def test_serve_toy_judge_passes_its_biases(tmp_path):
    from harness.serve.endpoint import serve_responder
    from judges.prompts import pairwise_messages

    messages = pairwise_messages("What is 2+3?", "7", "5")  # by the rubric, B (the correct one) wins
    verdicts = {}
    for bias in (0.0, 1.0):
        with serve_in_background(serve_responder("toy-judge", bias, 0.0, tmp_path)) as server:
            (reply,) = JudgeClient(server.base_url, "toy-judge").complete_all([(messages, {})])
        verdicts[bias] = reply.text[-5:]
    assert verdicts == {0.0: "[[B]]", 1.0: "[[A]]"}  # position bias 1: the first answer always wins
    with pytest.raises(HarnessError, match=r"--verbosity-bias: a probability in \[0, 1\], got 1.5"):
        serve_responder("toy-judge", 0.0, 1.5, tmp_path)


def test_judge_client_reads_the_key_from_the_named_env_var_and_the_served_model(monkeypatch):
    secret = "sk-test-DO-NOT-STORE-4f1c9a"
    seen = []

    def responder(body):
        seen.append(body)
        return ScriptedJudge({})(body)

    monkeypatch.setenv("MY_JUDGE_KEY", secret)
    spec = SimpleNamespace(api_key_env="MY_JUDGE_KEY", model=None, concurrency=2, max_retries=1,
                           timeout_s=5.0, temperature=0.0, backend="openai", base_url=None)
    with serve_in_background(responder, model_name="served-judge") as server:
        spec.base_url = server.base_url
        c = judge_client(spec, server.base_url, None)
        assert c._api_key == secret and c.model == "served-judge" and c.concurrency == 2
        assert c.cache_identity == server.base_url  # a user's endpoint is keyed by its URL
        c.complete_all([([{"role": "system", "content": "judge"}, {"role": "user", "content": "x"}], {})])
    assert seen[0]["model"] == "served-judge" and seen[0]["temperature"] == 0.0
    monkeypatch.delenv("MY_JUDGE_KEY")
    assert judge_client(SimpleNamespace(**{**vars(spec), "model": "m"}), "http://x/v1", None)._api_key == "EMPTY"


def test_every_judge_backend_the_spec_accepts_has_one_record():
    assert list(BACKENDS) == list(get_args(JudgeSpec.model_fields["backend"].annotation))
