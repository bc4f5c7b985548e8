"""Preflight: a generation backend that cannot run here stops the sweep before anything is spent."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml

from harness.cli import main
from harness.config.spec import EvalSpec, GenerationSpec, load_spec
from harness.errors import HarnessError
from harness.run.preflight import check_eval, check_judge_data
from tests import fake_vllm


def spec_file(tmp_path, backend: str):
    spec = {"name": "pre", "results_dir": str(tmp_path / "results"), "model": "toy://micro",
            "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"},
            "eval": {"suites": ["arith"], "generation": {"backend": backend}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_vllm_not_installed_fails_before_the_store_opens(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)
    assert main(["sweep", str(spec_file(tmp_path, "vllm"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("eval.generation.backend: vllm is not installed; install the extra "
                            "(pip install -e '.[vllm]') or set eval.generation.backend=transformers")
    assert not (tmp_path / "results" / "mlflow.db").exists()


def test_vllm_without_cuda_fails_before_the_store_opens(tmp_path, monkeypatch, capsys):
    fake_vllm.install(monkeypatch, lambda p, k, params: ([], "stop", None))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["sweep", str(spec_file(tmp_path, "vllm"))]) == 2
    assert "eval.generation.backend: vllm needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "results" / "mlflow.db").exists()


def test_no_suites_need_no_backend(monkeypatch):
    """A stage that evaluates nothing generates nothing, so its backend setting is not checked."""
    monkeypatch.setitem(sys.modules, "vllm", None)
    settings = GenerationSpec(backend="vllm")
    check_eval(EvalSpec(suites=[], generation=settings), rows_of=None)
    with pytest.raises(HarnessError, match="vllm is not installed"):
        check_eval(EvalSpec(suites=["arith"], generation=settings), rows_of=None)


def _custom_pairwise_spec(tmp_path, **judge):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "1", "prompt": "Write a haiku about autumn."}\n{"id": "2", "prompt": "What is 2+3?"}\n')
    spec = {"name": "pre", "results_dir": str(tmp_path / "results"), "model": "toy://micro",
            "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"}, "judge": judge,
            "eval": {"suites": ["pairwise"], "pairwise": {"data": str(prompts), "baseline": "base"}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_toy_judge_refuses_a_sweep_on_items_outside_the_toy_world(tmp_path, capsys):
    assert main(["sweep", str(_custom_pairwise_spec(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "eval.pairwise: 1 of 2 items are not from the toy world (first: 'Write a haiku about autumn.')" in err
    assert "judge.base_url" in err and "judge.allow_toy_judge: true" in err
    assert not (tmp_path / "results" / "mlflow.db").exists()  # refused before anything was spent


def test_allow_toy_judge_or_a_real_judge_passes_that_check(tmp_path):
    for judge in ({"allow_toy_judge": True}, {"base_url": "http://127.0.0.1:9/v1", "model": "m"}):
        spec = load_spec(_custom_pairwise_spec(tmp_path, **judge))
        check_judge_data(spec, [spec.eval])  # no error
