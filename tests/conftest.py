"""Shared test setup: every test sees a clean tracking environment, and MLflow's sqlite stores skip fsync."""

import os
import sqlite3
import tempfile

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


# Toy models are built into the user's cache (harness.train.models.user_cache_dir): in tests, one
# directory for the whole session (subprocesses inherit it), so each toy model is built once per run
# and never into the developer's ~/.cache.
os.environ["HARNESS_CACHE"] = tempfile.mkdtemp(prefix="harness-test-cache-")


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


@pytest.fixture
def results_sharing_toy_models(tmp_path):
    """A fresh results dir; toy models come from the session's shared ``HARNESS_CACHE``.

    Pretraining toy://tiny costs ~2.5 min of CPU, and two slow tests (the quickstart and the
    hedged preference gain) start from it: the first one to run builds it through the sweep's own
    path (toy_model_path, under its file lock), the other loads that build.  Everything else
    (store, stage cache, reference log-probs) stays in the test's own directory.
    """
    results = tmp_path / "results"
    (results / "cache").mkdir(parents=True)
    return results
