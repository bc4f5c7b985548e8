"""``harness judge --model`` on a PEFT LoRA adapter directory: generated from the adapter's base with the
adapter applied, for real on the CPU (transformers) and as a LoRARequest on a fake ``vllm``."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from peft import LoraConfig, get_peft_model

from harness.cli import main
from harness.config.spec import EvalSpec
from harness.errors import HarnessError
from harness.eval import backends
from harness.judge_cmd.candidates import candidates_from_model, generator_name, model_and_adapter
from harness.toy import toy_model_path
from harness.train.models import load_model, load_tokenizer
from tests import fake_vllm

SETTINGS = ["--suite", "arith", "--set", "eval.arith.limit=4", "--set", "eval.generation.max_new_tokens=6",
            "--format", "json"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(base dir, a freshly saved rank-4 LoRA adapter dir on it, the adapter merged into a full model)."""
    root = tmp_path_factory.mktemp("adapter")
    base = toy_model_path("micro", root / "cache", progress=False)
    torch.manual_seed(0)
    model = get_peft_model(load_model(str(base)), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():  # lora_B starts at zero (a no-op adapter): make it change the outputs
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 1.0)
    adapter, merged = root / "my-adapter", root / "merged"
    model.save_pretrained(adapter)
    model.merge_and_unload().save_pretrained(merged)
    load_tokenizer(str(base)).save_pretrained(merged)
    return base, adapter, merged


def judged_outputs(tmp_path: Path, model: Path, capsys) -> tuple[dict, list[dict], dict]:
    """(the printed result row, the logged outputs rows, the logged params) of ``harness judge --model``."""
    results = tmp_path / model.name
    assert main(["judge", "--model", str(model), *SETTINGS, "--results-dir", str(results)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("judge").experiment_id])
    local = client.download_artifacts(run.info.run_id, "outputs/arith.jsonl", str(results / "dl"))
    return row, [json.loads(line) for line in Path(local).read_text().splitlines()], run.data.params


def test_adapter_directory_is_judged_as_base_plus_adapter(models, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # transformers, even where vllm is installed
    base, adapter, merged = models
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    row, with_adapter, params = judged_outputs(tmp_path, adapter, capsys)
    _, from_merged, _ = judged_outputs(tmp_path, merged, capsys)
    _, from_base, _ = judged_outputs(tmp_path, base, capsys)
    assert row["generator"] == "my-adapter" and row["num_prompts"] == 4
    assert {r["generator"] for r in with_adapter} == {"my-adapter"}
    outputs = [r["output"] for r in with_adapter]
    assert outputs == [r["output"] for r in from_merged]  # the adapter is applied...
    assert outputs != [r["output"] for r in from_base]    # ...and it matters
    assert {r["generation"]["backend"] for r in with_adapter} == {"transformers"}
    assert params["eval.generation.backend"] == "transformers"  # resolved, not `auto`


def test_adapter_directory_is_served_by_vllm_as_a_lora_request(models, monkeypatch):
    base, adapter, _ = models
    rec = fake_vllm.install(monkeypatch, lambda p, k, params: ([19, 13], "stop", None))
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    eval_cfg = EvalSpec.model_validate({"suites": ["arith"], "arith": {"limit": 2},
                                        "generation": {"backend": "vllm"}})
    args = types.SimpleNamespace(model=str(adapter))
    plan = candidates_from_model(args, ["arith"], eval_cfg, Path("unused"))
    [engine] = rec.engines
    assert engine["model"] == str(base) and engine["enable_lora"] is True and engine["max_lora_rank"] == 8
    assert rec.lora_requests == [("my-adapter", 1, str(adapter))]
    assert rec.cleanups[0] == "shutdown"  # closed once the suites are generated
    items, rows = plan["my-adapter"]["arith"]
    assert len(items) == len(rows) == 2
    assert {r["generation"]["backend"] for r in rows} == {"vllm"} and {r["num_tokens"] for r in rows} == {3}


def test_adapter_without_a_base_is_a_clear_error(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4}))
    with pytest.raises(HarnessError, match="no base_model_name_or_path"):
        model_and_adapter(str(tmp_path), tmp_path)


def test_generator_names_are_readable(tmp_path):
    stage = tmp_path / "results" / "cache" / "stages" / "0123abcd" / "model"
    stage.mkdir(parents=True)
    (stage.parent / "meta.json").write_text(json.dumps({"run_id": "r", "trial_id": "beta0.5-seed0-1a2b3c4d",
                                                        "stage": "sft", "steps": 3}))
    assert generator_name(str(stage)) == "beta0.5-seed0-1a2b3c4d/sft"
    assert generator_name(str(tmp_path / "runs" / "exp1" / "checkpoint-500") + "/") == "exp1/checkpoint-500"
    assert generator_name(str(tmp_path / "plain" / "model")) == "plain/model"
    assert generator_name("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen2.5-0.5B-Instruct"
    assert generator_name("toy://micro") == "toy://micro"
