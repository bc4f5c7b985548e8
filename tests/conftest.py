"""Shared test setup: every test sees a clean tracking environment."""

import pytest


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch):
    # A developer's MLFLOW_TRACKING_URI would outrank the specs' stores (by design).
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
