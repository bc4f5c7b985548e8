"""`harness ui`: the MLflow UI stops with harness, workers included; a busy port is an error."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _session(sid: int) -> list[int]:
    """Processes of session ``sid`` (the UI leads its own session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:  # after "pid (comm)": state, ppid, pgrp, session
                found.append(int(entry.name))
    return found


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_the_ui_and_its_workers_stop_when_harness_is_terminated(tmp_path):
    results = tmp_path / "uniq-results"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "ui", "--port", "0", "--results-dir", str(results)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"http://127.0.0.1:(\d+)", line).group(1))
        deadline = time.monotonic() + 120
        while not _healthy(f"http://127.0.0.1:{port}/health"):
            assert proc.poll() is None and time.monotonic() < deadline, "the UI never came up"
            time.sleep(0.5)
        assert line.startswith("MLflow UI for sqlite:///") and f"at http://127.0.0.1:{port}" in line
        [server] = [pid for pid in _processes_mentioning(str(results)) if pid != proc.pid]
        argv = (Path("/proc") / str(server) / "cmdline").read_bytes().decode().split("\0")
        assert argv[1:4] == ["-m", "mlflow", "ui"] and argv[argv.index("--host") + 1] == "127.0.0.1"
        assert argv[argv.index("--workers") + 1] == "1" and argv[argv.index("--port") + 1] == str(port)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        # mlflow's UI starts workers (uvicorn, a job runner, huey consumers) whose command lines do not
        # name the store: every process of the UI's session must be gone.
        deadline = time.monotonic() + 15
        while (_processes_mentioning(str(results)) or _session(server)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_mentioning(str(results)) == [] and _session(server) == []
        assert not _healthy(f"http://127.0.0.1:{port}/health")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_busy_port_is_an_error_not_a_hang(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["ui", "--port", str(port), "--results-dir", str(tmp_path / "results")])
    assert code == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
