"""Where the MLflow store is: --tracking-uri, then MLFLOW_TRACKING_URI, then the spec, then results_dir."""

from __future__ import annotations

from importlib import metadata
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
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))  # no schema template yet: it is migrated now
    store = resolve_store(None, None, None, str(tmp_path / "results"))

    def killed(engine):  # what SIGKILL left: a migration's scratch table, the migrations not run
        from sqlalchemy import text

        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)"))
        raise KeyboardInterrupt

    monkeypatch.setattr(db_utils, "_upgrade_db", killed)
    with pytest.raises(KeyboardInterrupt):
        Tracker(store).experiment("first")
    assert not (tmp_path / "results" / "mlflow.db").exists()
    assert [p.name for p in (tmp_path / "cache" / "mlflow-schema").iterdir()] == []  # no half-made template
    monkeypatch.undo()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    tracker = Tracker(store)
    experiment = tracker.experiment("second")
    run_id = tracker.create_run(experiment, "r", {"k": "v"})
    assert tracker.client.get_run(run_id).data.tags["k"] == "v"
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["mlflow.db"]  # no temporary store left
    assert [p.name for p in (tmp_path / "cache" / "mlflow-schema").iterdir()] == [
        f"mlflow-{metadata.version('mlflow')}.db"]


def test_new_stores_are_copies_of_the_schema_template(tmp_path, monkeypatch):
    """A new sqlite store starts as a copy of one migrated once per MLflow version (issue 15: migrating took
    seconds of every fresh run); where the user cache cannot be written it is migrated in place, as before."""
    from harness.run.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    for name in ("a", "b"):
        tracker = Tracker(resolve_store(None, None, None, str(tmp_path / name)))
        run_id = tracker.create_run(tracker.experiment(name), "r", {})
        tracker.log_metrics(run_id, {"m": 1.0}, 3)
        tracker.set_status(run_id, "FINISHED")
        assert tracker.client.get_metric_history(run_id, "m")[0].step == 3
    assert len(list((tmp_path / "cache" / "mlflow-schema").glob("mlflow-*.db"))) == 1
    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "not-a-dir"))
    tracker = Tracker(resolve_store(None, None, None, str(tmp_path / "c")))
    assert tracker.experiment("c")
