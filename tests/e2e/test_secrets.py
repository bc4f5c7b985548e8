"""Fault campaign, secrets: the judge's API key never reaches a file, the MLflow store or a log line.

With ``OPENAI_API_KEY`` set to a canary, a toy sweep with a judged suite (the
embedded toy judge, which receives the key as a bearer token) and a tracked
``harness judge`` run leave the canary in no file under results/ (the sqlite
store, artifacts, caches), no MLflow param, tag, metric name or artifact, and
no line printed or logged at any level.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from harness.cli import main
from tests.e2e.test_judge import outputs_file

CANARY = "sk-canary-7f3a9c1e5b2d4068"


def _artifact_files(client, run_id, path=""):
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            yield from _artifact_files(client, run_id, item.path)
        else:
            yield item.path


@pytest.mark.slow  # about 45 s: a sweep with a judged suite and a tracked judge run
def test_api_key_leaves_no_trace(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    results = tmp_path / "results"
    spec = {
        "name": "secrets", "results_dir": str(results), "model": "toy://micro",
        "method": {"name": "sft"}, "data": {"train": "toy://arith-sft", "fraction": 0.01},
        "train": {"batch_size": 4, "max_length": 64, "max_steps": 2},
        "eval": {"suites": ["pairwise"], "generation": {"max_new_tokens": 4},
                 "pairwise": {"limit": 2, "baseline": "base"}},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    cand = outputs_file(tmp_path / "cand.jsonl", "cand", {0, 1, 2, 3})
    base = outputs_file(tmp_path / "base.json", "base", {0, 1})
    with caplog.at_level(logging.DEBUG):
        assert main(["sweep", str(path)]) == 0
        assert main(["judge", "--outputs", str(cand), "--baseline", str(base), "--suite", "pairwise",
                     "--results-dir", str(results)]) == 0
    captured = capsys.readouterr()
    assert CANARY not in captured.out + captured.err
    assert not [r.getMessage() for r in caplog.records if CANARY in r.getMessage()]

    files = [f for f in results.rglob("*") if f.is_file()]
    assert len(files) > 10 and any(f.name == "mlflow.db" for f in files)
    assert not [str(f) for f in files if CANARY.encode() in f.read_bytes()]

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    n_runs = n_artifacts = 0
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=10_000):
            n_runs += 1
            data = run.data
            for mapping in (data.params, data.tags, {k: str(v) for k, v in data.metrics.items()}):
                assert not [k for k, v in mapping.items() if CANARY in k or CANARY in v], run.info.run_id
            for artifact in _artifact_files(client, run.info.run_id):
                n_artifacts += 1
                local = Path(client.download_artifacts(run.info.run_id, artifact, str(tmp_path / "dl")))
                assert CANARY.encode() not in local.read_bytes(), artifact
    assert n_runs >= 3 and n_artifacts >= 5  # the sweep parent, the trial and the judge run were all read
