"""Shared test setup: every test sees a clean tracking environment."""

import pytest


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
