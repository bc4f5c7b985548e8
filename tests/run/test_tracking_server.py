"""``sweep_server``: one real ``mlflow server`` that parallel writers share, stopped with the sweep.

Two writer processes (a child and this one) log runs, metrics and artifacts through one server at the same time; nothing
is lost, the sqlite file reads back everything they wrote (artifacts included, in the same artifact
root), a run written directly to the file reads through the server, and no process of the server
outlives the block.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from harness.errors import HarnessError
from harness.run.tracking import Store, Tracker
from harness.run.tracking_server import server_command, server_env, sweep_server
from tests.run.test_ui import _processes_mentioning, _session

ROOT = Path(__file__).resolve().parents[2]
RUNS, STEPS = 4, 10

def write(name: str, store: Store) -> None:
    """One writer: RUNS runs in the shared experiment, each with STEPS metric steps, a param and an artifact."""
    tracker = Tracker(store)
    exp = tracker.experiment("shared")
    for i in range(RUNS):
        run = tracker.create_run(exp, f"{name}-{i}", {"writer": name})
        tracker.log_params(run, {"i": i})
        for step in range(1, STEPS + 1):
            tracker.log_metrics(run, {"train/loss": step / 10, "train/lr": 0.1}, step)
        tracker.log_text(run, f"{name} {i}", f"notes/{name}-{i}.txt")
        tracker.set_status(run, "FINISHED")


def _writer(name: str, store: Store) -> subprocess.Popen:
    """``write`` in a child process."""
    code = ("import sys; from harness.run.tracking import Store; from tests.run.test_tracking_server import write; "
            "write(sys.argv[1], Store(*sys.argv[2:4]))")
    return subprocess.Popen([sys.executable, "-c", code, name, store.tracking_uri, store.artifact_root],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_run(store: Store, name: str, child: subprocess.Popen, timeout_s: float = 120.0) -> None:
    client = MlflowClient(store.tracking_uri)
    deadline = time.monotonic() + timeout_s
    while True:
        exp = client.get_experiment_by_name("shared")
        if exp and client.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'"):
            return
        assert child.poll() is None, child.communicate()[0]
        assert time.monotonic() < deadline, f"no run {name!r} in {timeout_s} s"
        time.sleep(0.05)


def _gone(pids: list[int], db: str, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while (_processes_mentioning(db) or any(_session(pid) for pid in pids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _processes_mentioning(db) and not any(_session(pid) for pid in pids)


@pytest.mark.slow  # a server and a second interpreter, ~10 CPU-s
def test_two_writers_share_one_server_and_the_sqlite_file_reads_it_all(tmp_path):
    db = tmp_path / "uniq-store" / "mlflow.db"
    store = Store(f"sqlite:///{db}", str(tmp_path / "artifacts"))
    direct = Tracker(store)  # a run written to the file before the server exists
    before = direct.create_run(direct.experiment("before"), "before", {})
    direct.log_text(before, "written directly", "note.txt")
    with sweep_server(store) as served:
        assert served.tracking_uri.startswith("http://127.0.0.1:") and served.artifact_root == store.artifact_root
        [server] = _processes_mentioning(str(db))
        argv = (Path("/proc") / str(server) / "cmdline").read_bytes().decode().split("\0")
        assert argv[1:4] == ["-m", "mlflow", "server"] and argv[argv.index("--host") + 1] == "127.0.0.1"
        child = _writer("a", served)
        _wait_for_run(served, "a-0", child)
        write("b", served)  # the second writer is this process, while the child writes (one interpreter less)
        output = child.communicate(timeout=180)[0]
        assert child.returncode == 0, output
        via_server = MlflowClient(served.tracking_uri)
        path = via_server.download_artifacts(before, "note.txt", str(tmp_path / "down"))
        assert Path(path).read_text() == "written directly"
    assert _gone([server], str(db)), "the server (or a process of its group) outlived the block"
    client = MlflowClient(store.tracking_uri)  # the sqlite file itself, no server
    exp = client.get_experiment_by_name("shared")
    assert exp.artifact_location == (Path(store.artifact_root) / "shared").as_uri()
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(f"{n}-{i}" for n in "ab" for i in range(RUNS))
    started = {r.info.run_name: r.info.start_time for r in runs}
    ended = {r.info.run_name: r.info.end_time for r in runs}
    assert started["b-0"] < ended[f"a-{RUNS - 1}"], "the writers did not overlap"
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.params["i"] == run.info.run_name[2:]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == list(range(1, STEPS + 1))
        local = Path(run.info.artifact_uri.removeprefix("file://")) / "notes" / f"{run.info.run_name}.txt"
        assert local.is_relative_to(store.artifact_root) and local.read_text() == run.info.run_name.replace("-", " ")


def test_an_http_store_is_used_as_it_is_and_nothing_starts(tmp_path):
    store = Store("http://127.0.0.1:9", str(tmp_path / "artifacts"))
    with sweep_server(store) as served:
        assert served is store
    assert not (tmp_path / "artifacts").exists()


def test_a_server_that_dies_at_start_is_one_error_with_its_output(tmp_path):
    store = Store("nosuchdb://x", str(tmp_path / "artifacts"))  # a backend MLflow has no store for
    with pytest.raises(HarnessError) as err, sweep_server(store, timeout_s=120):
        pytest.fail("the block ran without a server")
    message = str(err.value)
    assert message.startswith("mlflow server for nosuchdb://x exited with code") and "its output ends:" in message
    assert "unsupported URI 'nosuchdb://x'" in message, message


def test_the_server_command_binds_loopback_with_one_worker_and_the_artifact_root():
    cmd = server_command(Store("sqlite:////x/mlflow.db", "/x/artifacts"), 5123)
    assert cmd[1:4] == ["-m", "mlflow", "server"]
    options = dict(zip(cmd[4::2], cmd[5::2]))
    assert options == {"--backend-store-uri": "sqlite:////x/mlflow.db", "--artifacts-destination": "/x/artifacts",
                       "--host": "127.0.0.1", "--port": "5123", "--workers": "1"}
    assert server_env()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"  # no job runner: one writer, faster start
