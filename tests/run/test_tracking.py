"""Where the MLflow store is: --tracking-uri, then MLFLOW_TRACKING_URI, then the spec, then results_dir."""

from __future__ import annotations

from pathlib import Path

from harness.run.tracking import resolve_store


def test_store_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = resolve_store(None, None, None, "out")
    assert default.tracking_uri == f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    assert default.artifact_root == str(tmp_path / "out" / "artifacts")
    assert resolve_store(None, "sqlite:///spec.db", None, "out").tracking_uri == f"sqlite:///{tmp_path / 'spec.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_store(None, "sqlite:///spec.db", None, "out").tracking_uri == "http://127.0.0.1:5999"
    cli = resolve_store("sqlite:///cli.db", "sqlite:///spec.db", "arts", "out")
    assert cli.tracking_uri == f"sqlite:///{tmp_path / 'cli.db'}"
    assert cli.artifact_root == str(tmp_path / "arts")
    assert Path(cli.artifact_root).is_absolute()


def test_absolute_sqlite_path_is_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/abs.db"
    assert resolve_store(uri, None, None, "results").tracking_uri == uri
