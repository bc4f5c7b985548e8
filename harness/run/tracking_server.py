"""One ``mlflow server`` per sweep, so that several writer processes share a store over HTTP.

A sqlite store takes one writer at a time: processes that write it directly wait on its
lock and, under load, fail with "database is locked".  A sweep that runs trials in several
processes therefore starts one ``mlflow server`` on its store (``sweep_server``), and every
worker logs to its http URL; the server is the store's only writer.

The server is bound to 127.0.0.1 on a free port, with one worker, in a process group of its
own (``harness.procs``), stopped as a whole when the sweep ends.  Artifacts do not pass
through it: harness creates experiments with an explicit ``file://`` location under the
artifact root (``Tracker.experiment``), and a client writes a run's artifacts there itself,
so a sweep logged through the server leaves the same files as one logged to the sqlite file
directly, and either reads the other's runs.  ``--artifacts-destination`` is the same root,
for experiments made by something else through the server (MLflow's ``mlflow-artifacts:/``).

An http(s) store is already a server: it is used as it is, and nothing is started.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from harness.errors import HarnessError
from harness.procs import dies_with_parent, free_port, stop
from harness.run.tracking import Store, create_sqlite_whole

HOST = "127.0.0.1"
# /health answered after 4.6 s on the 2-core VM (sqlite, new store), ~6 s while other tests ran and 9 s on
# PostgreSQL; a machine busy starting a sweep's workers may take several times that.
START_TIMEOUT_S = 180.0
STDERR_TAIL_CHARS = 3000


def is_served(uri: str) -> bool:
    """Whether ``uri`` is an MLflow tracking server (http or https) rather than a store harness opens itself."""
    return uri.startswith(("http://", "https://"))


def server_command(store: Store, port: int) -> list[str]:
    """``mlflow server`` on the store's backend, its artifacts under the store's artifact root."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store.tracking_uri,
            "--artifacts-destination", store.artifact_root, "--host", HOST, "--port", str(port),
            "--workers", "1"]  # one writer is the point; more workers would each open the sqlite file


def server_env() -> dict[str, str]:
    """The server's environment: ours, without MLflow's job runner.

    The runner (huey consumers and periodic tasks, for GenAI jobs harness never submits) is more
    processes that start with the server and open its store; without it the server answered after
    ~6 s instead of 23 s on the loaded 2-core VM, and the store has one writer.
    """
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@contextlib.contextmanager
def sweep_server(store: Store, timeout_s: float = START_TIMEOUT_S) -> Iterator[Store]:
    """The store to log to while the block runs: an http server's URL on ``store``'s backend.

    An http(s) store is yielded unchanged and nothing is started.  Otherwise a new sqlite
    store's tables are created first (whole, ``create_sqlite_whole``), then ``mlflow server``
    is started and waited for (its ``/health`` answers) before the block runs; it is stopped
    with its process group when the block exits, however it exits.  A server that dies or does
    not answer within ``timeout_s`` is a HarnessError with the tail of its output.
    """
    if is_served(store.tracking_uri):
        yield store
        return
    create_sqlite_whole(store.tracking_uri)
    Path(store.artifact_root).mkdir(parents=True, exist_ok=True)
    port = free_port(HOST)
    with tempfile.TemporaryFile("w+") as log:
        # dies_with_parent: a sweep killed with SIGKILL leaves no server behind (SIGTERM stops its uvicorn too)
        command = dies_with_parent(server_command(store, port)[1:])  # [1:]: python's own arguments
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=server_env())
        try:
            url = f"http://{HOST}:{port}"
            _wait_healthy(proc, url, log, store, timeout_s)
            yield Store(url, store.artifact_root)
        finally:
            stop(proc, grace_s=10.0)


def _wait_healthy(proc: subprocess.Popen, url: str, log, store: Store, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not _healthy(url + "/health"):
        if proc.poll() is not None:
            raise HarnessError(f"mlflow server for {store.tracking_uri} exited with code {proc.returncode} "
                               f"before it answered; its output ends:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise HarnessError(f"mlflow server for {store.tracking_uri} did not answer at {url}/health within "
                               f"{timeout_s:.0f} s; its output ends:\n{_tail(log)}")
        time.sleep(0.2)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-STDERR_TAIL_CHARS:].rstrip() or "(nothing)"
