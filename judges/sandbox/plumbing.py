"""The sandbox's plumbing on the harness side: uid slots, work directories, output capture.

``judges.sandbox.runner`` decides *what* to isolate; this module holds the parts that
touch the operating system around one run.
"""

from __future__ import annotations

import fcntl
import grp
import json
import os
import pwd
import selectors
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

# Sandbox uids (= gids): one per concurrently running sandbox, in a range that
# Debian policy reserves for on-demand global allocation and that is rarely used.
SLOT_UID_BASE = 64000
SLOT_COUNT = 64
# After the wall-clock limit, how long the launcher gets to kill, reap and report.
GRACE_S = 10.0
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def _has_account(uid: int) -> bool:
    """Whether ``uid`` (or the same number as a gid) belongs to someone: then it is never used."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    return False


def process_counts() -> Counter[int]:
    """Processes (thread-group leaders, zombies included) per real uid, from /proc."""
    counts: Counter[int] = Counter()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        counts[int(line.split()[1])] += 1
                        break
        except (FileNotFoundError, ProcessLookupError):
            continue
    return counts


def process_count(uid: int) -> int:
    """Processes whose real uid is ``uid``."""
    return process_counts()[uid]


def _lock_dir() -> Path:
    """A root-only directory for slot lock files; refuses one planted by somebody else."""
    path = Path(tempfile.gettempdir()) / "harness-sandbox-slots"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise HarnessError(f"code sandbox: {path} must be a directory owned by uid {os.geteuid()} "
                           f"and not writable by others; remove it and retry")
    return path


@contextmanager
def slot(drop_uid: bool) -> Iterator[int | None]:
    """Hold one sandbox uid for a run (None when not dropping privileges).

    A slot is held through an flock on its lock file, so threads and separate
    harness processes never share a uid.  A uid that still has processes (a
    crashed earlier run) is skipped.
    """
    if not drop_uid:
        yield None
        return
    lock_dir = _lock_dir()
    for uid in range(SLOT_UID_BASE, SLOT_UID_BASE + SLOT_COUNT):
        if _has_account(uid):
            continue
        handle = open(lock_dir / f"{uid}.lock", "a")  # noqa: SIM115 (held across the yield below)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        if process_count(uid):
            handle.close()
            continue
        try:
            yield uid
        finally:
            handle.close()
        return
    raise HarnessError(f"code sandbox: all {SLOT_COUNT} sandbox uids ({SLOT_UID_BASE}.."
                       f"{SLOT_UID_BASE + SLOT_COUNT - 1}) are busy or taken")


@contextmanager
def workdir(uid: int | None) -> Iterator[Path]:
    """A fresh private temp directory (owned by ``uid``), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="harness-sandbox-"))
    try:
        if uid is not None:
            os.chown(path, uid, uid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_strays(uid: int) -> None:
    """Delete what ``uid`` left at the top of the world-writable scratch directories."""
    for base in SCRATCH_DIRS:
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue


@dataclass
class Collected:
    """Everything read from one launcher: capped output and its status messages."""

    stdout: str
    stderr: str
    truncated: bool
    timed_out: bool
    status: int | None  # raw wait status of the candidate process; None if never reported
    error: str | None  # the launcher could not exec the candidate
    launcher_rc: int | None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        try:  # not yet a group leader (killed right after the fork): the process itself
            os.kill(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class _Reading:
    """What has been read so far from one launcher's three pipes."""

    buffers: dict[int, bytearray]
    status_fd: int
    cap: int
    truncated: bool = False
    child: int | None = None  # the candidate's pid (= its process group), once reported

    def take(self, fd: int, chunk: bytes) -> None:
        buffer = self.buffers[fd]
        if fd == self.status_fd:
            buffer += chunk
            self.child = self.child if self.child is not None else _messages(buffer).get("child")
            return
        room = self.cap - len(buffer)
        buffer += chunk[: max(room, 0)]
        self.truncated |= len(chunk) > room


def collect(proc: subprocess.Popen, status_r: int, wall_s: float, cap: int) -> Collected:
    """Read stdout, stderr (each kept up to ``cap`` bytes) and the status pipe until all close.

    At ``wall_s`` the candidate's process group is killed (the launcher then
    sweeps the uid and reports); GRACE_S later the launcher's own group is
    killed too and reading stops.  If the harness itself is interrupted, the
    candidate's group is killed and the launcher gets GRACE_S to sweep up.
    """
    reading = _Reading({proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(),
                        status_r: bytearray()}, status_r, cap)
    selector = selectors.DefaultSelector()
    for fd in reading.buffers:
        selector.register(fd, selectors.EVENT_READ)
    deadline, timed_out = time.monotonic() + wall_s, False
    try:
        while selector.get_map():
            now = time.monotonic()
            if not timed_out and now >= deadline:
                timed_out = True
                _kill_group(reading.child if reading.child is not None else proc.pid)
            if now >= deadline + GRACE_S:
                _kill_group(proc.pid)
                break
            for key, _ in selector.select(min((deadline + GRACE_S * timed_out) - now, 1.0)):
                chunk = os.read(key.fd, 1 << 16)
                if chunk:
                    reading.take(key.fd, chunk)
                else:
                    selector.unregister(key.fd)
    except BaseException:
        _kill_group(reading.child if reading.child is not None else proc.pid)
        _finish(proc, reading.buffers, status_r, reading.truncated, timed_out)
        raise
    finally:
        selector.close()
    return _finish(proc, reading.buffers, status_r, reading.truncated, timed_out)


def _messages(buffer: bytearray) -> dict:
    """The status pipe's complete JSON lines, merged into one dict."""
    merged = {}
    for line in bytes(buffer).decode("utf-8", "replace").splitlines(keepends=True):
        if line.endswith("\n"):
            merged.update(json.loads(line))
    return merged


def _finish(proc, buffers, status_r, truncated, timed_out) -> Collected:
    try:
        rc = proc.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        rc = proc.wait()
    out, err = bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()])
    proc.stdout.close()
    proc.stderr.close()
    messages = _messages(buffers[status_r])
    return Collected(stdout=out.decode("utf-8", "replace"), stderr=err.decode("utf-8", "replace"),
                     truncated=truncated, timed_out=timed_out, status=messages.get("status"),
                     error=messages.get("error"), launcher_rc=rc)
