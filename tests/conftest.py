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
    from judges.server import serve_in_background
    from judges.toy_judge import make_responder

    with serve_in_background(make_responder()) as server:
        yield server.base_url
