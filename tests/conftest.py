"""Shared test setup: every test sees a clean tracking environment, and MLflow's sqlite stores skip fsync."""

import sqlite3

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine


@event.listens_for(Engine, "connect")
def _sqlite_without_fsync(dbapi_connection, _record):
    """Each MLflow write is a sqlite transaction, and by default each commit waits for fsync.

    The tests create dozens of fresh stores (each one runs MLflow's schema
    migrations) and write thousands of tags and metrics; on the 2-core VM's
    disk (~10 ms per fsync) the waits cost minutes.  ``synchronous=OFF`` only drops the
    wait for the disk: data still reaches the OS before a commit returns, so
    nothing a test reads (even from another process) changes, and no test
    simulates a power cut.  Applies to SQLAlchemy engines in the test process
    (MLflow's); the judge cache's own sqlite connection is untouched.
    """
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("PRAGMA synchronous=OFF")


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch):
    # A developer's MLFLOW_TRACKING_URI would outrank the specs' stores (by design).
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def toy_url():
    """The toy rubric judge served over real HTTP on 127.0.0.1 for the whole test module."""
    from harness.serve.server import serve_in_background
    from harness.serve.toy_judge import make_responder

    with serve_in_background(make_responder()) as server:
        yield server.base_url


@pytest.fixture(scope="session")
def _toy_models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("toy-models")


@pytest.fixture
def results_sharing_toy_models(tmp_path, _toy_models_dir):
    """A fresh results dir whose ``cache/toy`` is one toy-model directory shared by the whole session.

    Pretraining toy://tiny costs ~2.5 min of CPU, and two slow tests (the
    quickstart and the hedged preference gain) start from it.  The first one to
    run builds it, through the sweep's own path (toy_model_path, under its file
    lock); the other loads that build.  The build is deterministic and its
    directory is named by the recipe's fingerprint, so both see the model a
    fresh ``results/`` would build.  Everything else (store, stage cache,
    reference log-probs) stays in the test's own directory.
    """
    results = tmp_path / "results"
    (results / "cache").mkdir(parents=True)
    (results / "cache" / "toy").symlink_to(_toy_models_dir, target_is_directory=True)
    return results
