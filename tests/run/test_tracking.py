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


def test_a_store_cut_off_while_being_created_is_not_left_behind(tmp_path, monkeypatch):
    """Found by the kill -9 campaign: a sweep killed while MLflow migrated a new sqlite store left a file
    that every later command failed on.  The store is now created aside and linked into place whole."""
    import mlflow.store.db.utils as db_utils
    import pytest

    from harness.run.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = resolve_store(None, None, None, str(tmp_path / "results"))

    def killed(engine):  # what SIGKILL left: a migration's scratch table, the migrations not run
        from sqlalchemy import text

        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)"))
        raise KeyboardInterrupt

    monkeypatch.setattr(db_utils, "_upgrade_db", killed)
    with pytest.raises(KeyboardInterrupt):
        Tracker(store).experiment("first")
    monkeypatch.undo()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker(store)
    experiment = tracker.experiment("second")
    run_id = tracker.create_run(experiment, "r", {"k": "v"})
    assert tracker.client.get_run(run_id).data.tags["k"] == "v"
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["mlflow.db"]  # no temporary store left
