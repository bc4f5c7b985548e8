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
        assert _processes_mentioning(str(results))  # harness and mlflow's server
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _processes_mentioning(str(results)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_mentioning(str(results)) == []
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
