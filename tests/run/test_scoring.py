"""Sweep evaluation through the generation backends: one open generator at a time, vLLM serving the
saved checkpoint (a fake ``vllm`` at the import boundary) and closed before training resumes, and
the eval cache keyed by the backend that ran, never by ``auto``."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.eval import backends
from harness.run import sweep
from harness.run.scoring import Policy, Serving
from harness.toy.tokenizer import build_tokenizer
from tests import fake_vllm


def write_spec(tmp_path: Path, backend: str, **changes) -> Path:
    spec = {
        "name": "backends", "results_dir": str(tmp_path / "results"), "model": "toy://micro",
        "method": {"name": "sft"}, "data": {"train": "toy://arith-sft", "fraction": 0.01},
        "train": {"batch_size": 4, "max_length": 64, "max_steps": 2, "lr": 1e-2},
        "eval": {"suites": ["arith"], "generation": {"max_new_tokens": 3, "backend": backend},
                 "arith": {"limit": 3}},
    }
    spec.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def artifact_rows(tmp_path: Path, run, name: str) -> list[dict]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    local = client.download_artifacts(run.info.run_id, name, str(tmp_path / "dl" / run.info.run_id))
    return [json.loads(line) for line in Path(local).read_text().splitlines()]


def trial_runs(tmp_path: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("backends")
    found = client.search_runs([exp.experiment_id], max_results=100)
    return [r for r in found if "harness.trial_id" in r.data.tags]


def eval_entries(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "results" / "cache" / "evals").iterdir()}


def test_auto_is_keyed_and_recorded_as_the_backend_that_ran(tmp_path, monkeypatch):
    """On CPU, auto runs transformers: its rows say so, and a sweep asking for transformers by name
    finds every eval in the cache (same EvalKey), adding no entry."""
    monkeypatch.setitem(sys.modules, "vllm", None)
    assert main(["sweep", str(write_spec(tmp_path, "auto"))]) == 0
    [run] = trial_runs(tmp_path)
    rows = artifact_rows(tmp_path, run, "outputs/arith.jsonl")
    assert [r["generation"]["backend"] for r in rows] == ["transformers"] * 3
    entries = eval_entries(tmp_path)
    assert len(entries) == 1
    assert main(["sweep", str(write_spec(tmp_path, "transformers"))]) == 0
    assert eval_entries(tmp_path) == entries
    runs = trial_runs(tmp_path)
    assert len(runs) == 2  # the spec changed, so the trial id did; the eval did not
    assert len({r.data.metrics["eval/arith/kl"] for r in runs}) == 1


@pytest.fixture
def vllm_on_a_gpu(monkeypatch):
    """The fake vllm, and a GPU as the backends module sees it (training stays on the CPU)."""
    def script(prompt_ids, k, params):
        rec.log.append(("generate", rec.engines[-1]["model"], Path(rec.engines[-1]["model"]).is_dir()))
        return [19, 13], "stop", None

    rec = fake_vllm.install(monkeypatch, script)
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    train_stage = sweep.train_stage

    def logged_train_stage(stage, *args, **kwargs):
        rec.log.append(("train", stage.name))
        return train_stage(stage, *args, **kwargs)

    monkeypatch.setattr(sweep, "train_stage", logged_train_stage)
    return rec


def test_sweep_serves_checkpoints_with_vllm_one_engine_at_a_time(tmp_path, vllm_on_a_gpu):
    rec = vllm_on_a_gpu
    stages = [{"name": "sft", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"}},
              {"name": "more", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"},
               "train": {"save": "none"}}]
    spec = write_spec(tmp_path, "vllm", stages=stages, eval={
        "suites": ["arith", "pairwise"], "include_base": True, "after": "every_stage",
        "generation": {"max_new_tokens": 3, "backend": "vllm"}, "arith": {"limit": 3},
        "pairwise": {"limit": 2, "baseline": "base"}})
    assert main(["sweep", str(spec)]) == 0

    open_now, served = None, []
    for event in rec.log:  # never two engines at once, and none open while training
        if event[0] == "open":
            assert open_now is None
            open_now = event[1]
            served.append(event[1])
        elif event[0] == "close":
            open_now = None
        elif event[0] == "train":
            assert open_now is None, event
        else:
            assert event[2], f"served {event[1]} that is not a directory"
    assert open_now is None and len(rec.cleanups) == 3 * len(rec.engines)
    base = rec.engines[0]["model"]
    sft_checkpoint = next(m for m in served if "/cache/stages/" in m)
    temporary = next(m for m in served if "harness-eval-" in m)  # `more` is not saved: a temporary save
    assert base.endswith("micro") or "toy" in base
    assert not Path(temporary).exists()
    assert set(served) == {base, sft_checkpoint, temporary}
    assert [e for e in rec.log if e[0] == "train"] == [("train", "sft"), ("train", "more")]

    runs = trial_runs(tmp_path)
    for run in runs:
        if "eval/arith/kl" not in run.data.metrics:
            continue
        rows = artifact_rows(tmp_path, run, "outputs/arith.jsonl")
        assert {r["generation"]["backend"] for r in rows} == {"vllm"}
        assert {r["num_tokens"] for r in rows} == {3}  # [19, 13] + the EOS vLLM left out
    kls = [r.data.metrics["eval/arith/kl"] for r in runs if "eval/arith/kl" in r.data.metrics]
    assert any(kl != 0.0 and math.isfinite(kl) for kl in kls)  # the KL ran on the HF models


def test_serving_closes_one_generator_before_opening_another():
    log = []

    class Gen:
        def __init__(self, name):
            self.name = name
            log.append(("open", name))

        def close(self):
            log.append(("close", self.name))

    serving = Serving()
    a = serving.get("policy", lambda: Gen("policy"))
    assert serving.get("policy", lambda: Gen("again")) is a
    serving.get("base", lambda: Gen("base"))
    serving.close()
    serving.close()
    assert log == [("open", "policy"), ("close", "policy"), ("open", "base"), ("close", "base")]


def test_an_unsaved_model_is_served_from_a_temporary_checkpoint():
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    policy = Policy(None, torch.device("cpu"), model, tok)
    path = Path(policy.checkpoint())
    assert policy.checkpoint() == str(path)  # saved once
    loaded = AutoModelForCausalLM.from_pretrained(path)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert (path / "tokenizer_config.json").is_file()
    policy.cleanup()
    assert not path.exists()
