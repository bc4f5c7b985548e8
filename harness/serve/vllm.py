"""``judge.backend: vllm``: run ``vllm serve MODEL`` as a child process for the duration of a judging run.

The child gets its own process group (so its engine workers stop with it), a
free port on 127.0.0.1 and a log file.  We poll ``GET /health`` until it
answers 200, and fail with the log's tail if the process exits first or the
timeout passes.  On exit, SIGTERM to the group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from harness.errors import HarnessError
from harness.procs import free_port, stop

HEALTH_TIMEOUT_S = 900.0  # a large model's first load (weights + CUDA graphs) takes minutes
STOP_GRACE_S = 30.0


def vllm_command(executable: str, model: str, host: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    return [executable, "serve", model, "--host", host, "--port", str(port), *extra]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_healthy(proc: subprocess.Popen, health_url: str, timeout_s: float, log_path: Path,
                 poll_s: float = 0.25) -> None:
    """Return once ``health_url`` answers 200; HarnessError if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"vllm serve exited with code {proc.returncode} before it was healthy; "
                               f"log {log_path}:\n{_tail(log_path)}")
        if _healthy(health_url):
            return
        time.sleep(poll_s)
    raise HarnessError(f"vllm serve was not healthy at {health_url} after {timeout_s:.0f} s; "
                       f"log {log_path}:\n{_tail(log_path)}")


@contextmanager
def vllm_server(model: str, *, log_dir: Path | None = None, host: str = "127.0.0.1",
                health_timeout_s: float = HEALTH_TIMEOUT_S, extra_args: Sequence[str] = (),
                grace_s: float = STOP_GRACE_S) -> Iterator[str]:
    """Start ``vllm serve model``, wait for health, yield its ``/v1`` base URL, stop it afterwards."""
    executable = shutil.which("vllm")
    if executable is None:
        raise HarnessError("judge.backend is vllm but the `vllm` command is not installed "
                           "(pip install 'harness[vllm]' on a GPU machine), or set judge.base_url")
    port = free_port(host)
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="harness-vllm-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"vllm-serve-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(vllm_command(executable, model, host, port, extra_args), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(proc, f"http://{host}:{port}/health", health_timeout_s, log_path)
        yield f"http://{host}:{port}/v1"
    finally:
        stop(proc, grace_s)
