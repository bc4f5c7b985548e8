"""Child servers in their own process group: a free port, and a stop that takes the whole group.

``harness ui`` (MLflow's UI and its workers) and ``judge.backend: vllm`` (``vllm serve`` and its
engine processes) start children that start children; stopping only the first would leave the
rest serving.  So each child is the leader of a new session (``start_new_session=True``), and
``stop`` signals the group: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from harness.errors import HarnessError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def claim_port(host: str, port: int, what: str) -> int:
    """``port`` if nothing listens there (0: a free one); a HarnessError naming ``what`` if it is taken."""
    if port == 0:
        return free_port(host)
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            raise HarnessError(f"{what}: port {port} on {host} is in use (another server is running there); "
                               "stop it, or pass --port 0 for a free port") from None
    return port


def stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM the child's process group, then SIGKILL if it is still there after ``grace_s``."""
    if proc.poll() is not None:
        _kill_group(proc.pid, signal.SIGKILL)  # the leader is gone; its children may not be
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        if not _kill_group(proc.pid, sig):
            return
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        _kill_group(proc.pid, signal.SIGKILL)  # stragglers of a leader that exited
        return


def _kill_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


# Run in front of a Python command (``dies_with_parent``): SIGTERM when the parent dies, even by SIGKILL
# (Linux's PR_SET_PDEATHSIG = 1, kept across exec), then the command in its place.  A preexec_fn would do
# it in the forked child, where another thread's lock may be held.  The signal follows the *thread* that
# started the child, so start such children from the main thread.
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    if os.getppid() != int(sys.argv[1]):
        sys.exit(1)  # the parent is already gone
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def dies_with_parent(python_args: list[str]) -> list[str]:
    """``python PYTHON_ARGS`` as a command that gets SIGTERM when this process dies, however it dies:
    a sweep killed with SIGKILL leaves no worker training and no server holding its port."""
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *python_args]
