"""benchmarks/gpu_online.py at toy size on CPU (--smoke): GRPO through an engine synced before each rollout, and the
weight-sync check, which must see stale weights differ and synced weights agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_online.py"


def test_the_smoke_mode_trains_and_the_weight_sync_check_tells_stale_from_synced(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_online.json").read_text())
    assert report["mode"] == "smoke" and len(report["iterations"]) == 2
    for row in report["iterations"]:
        assert row["generation_s"] > 0 and row["update_s"] > 0 and "weight_sync_s" in row
    assert report["stale"]["mean_abs"] > 1e-3  # the unseen step moved what the engine samples from
    assert report["synced"]["max_abs"] <= 1e-5 and report["passed"] and report["stale_detected"]
    assert "before sync (stale)" in proc.stdout and "after sync" in proc.stdout


def test_the_gpu_modes_log_probs_are_the_sampled_tokens_own_at_temperature_one(monkeypatch, tmp_path):
    """The GPU-only reader of vLLM's output, on the fake vllm: one request per prompt with ``logprobs=0`` (the
    sampled token's own log-prob), the check's temperature 1, and (token, log-prob) pairs in order."""
    import importlib.util
    import types

    from harness.config.spec import GenerationSpec
    from harness.toy.tokenizer import build_tokenizer
    from harness.train.vllm_rollouts import VllmRollouts
    from tests import fake_vllm

    spec = importlib.util.spec_from_file_location("gpu_online", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def script(prompt_ids, k, params):
        tokens = [7, 8, 2]
        return tokens, "stop", None, [{t: types.SimpleNamespace(logprob=-0.5 * (j + 1))} for j, t in enumerate(tokens)]

    rec = fake_vllm.install(monkeypatch, script)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # restored after the test
    engine = VllmRollouts(str(tmp_path), build_tokenizer(), 64)
    settings = GenerationSpec(max_new_tokens=4, temperature=1.0, top_p=1.0, n=1, seed=5)
    sampled = module.vllm_sampled_logps(engine, [[1, 5], [1, 6, 6]], settings)
    assert sampled == [([7, 8, 2], [-0.5, -1.0, -1.5])] * 2
    ((_, params, _),) = rec.generate_calls
    assert [(p.fields["logprobs"], p.fields["temperature"], p.fields["n"]) for p in params] == [(0, 1.0, 1)] * 2
