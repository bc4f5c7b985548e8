"""Run untrusted Python (model-written code plus its tests) in a sandbox.

What is isolated, and how (Linux):

- **Privileges.**  The candidate runs as a dedicated unprivileged uid/gid
  (``SLOT_UID_BASE + slot``, one per concurrently running sandbox, each
  checked to have no account in the passwd/group databases), with no
  supplementary groups.  Rlimits do not bind root, so harness must itself run
  as root to drop to that uid; one uid per slot keeps RLIMIT_NPROC budgets and
  clean-up sweeps of parallel sandboxes apart.
- **Network.**  A new network namespace (util-linux ``unshare --net``) with
  only a loopback device that is down: no connection reaches the host's
  loopback or anything else.
- **Resources.**  RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_NOFILE,
  RLIMIT_NPROC (per uid, so a fork bomb stalls), RLIMIT_FSIZE, no core files;
  a wall-clock limit; captured stdout/stderr are cut at ``max_output_bytes``.
- **Files.**  The working directory and HOME are a fresh temporary directory
  owned by the sandbox uid, removed afterwards with whatever the uid left in
  /tmp, /var/tmp and /dev/shm.  Other files are protected by their ordinary
  permissions only: world-readable files stay readable.
- **Processes.**  The candidate leads its own process group.  On timeout the
  whole group is killed; then the launcher (``judges/sandbox/launcher.py``,
  a child subreaper) kills every remaining process of the uid, also those
  that escaped the group, and reaps them all.

Where this is unavailable (not root, or ``unshare`` missing or not
permitted), ``run_python`` refuses with a HarnessError unless the caller
passes ``allow_unsafe=True`` (suite option ``code: {unsafe: true}``); then it
runs with whatever subset is available (always: own session, temp dir,
rlimits except RLIMIT_NPROC when it cannot drop to its own uid).
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from judges.sandbox.plumbing import collect, process_count, remove_strays, slot, workdir

LAUNCHER = Path(__file__).with_name("launcher.py")
# Interpreters tried for candidate code, first one the sandbox uid can run wins
# (a pyenv or venv interpreter under /root is not reachable for an unprivileged uid).
PYTHON_CANDIDATES = (os.path.realpath(sys.executable), os.path.realpath(sys._base_executable),
                     "/usr/bin/python3", "/usr/local/bin/python3")
UNSAFE_HINT = ("pass allow_unsafe=True (suite option `code: {unsafe: true}`) to run candidate code "
               "with reduced isolation at your own risk")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run; ``cpu_s`` None means ceil(wall_s)."""

    wall_s: float = 10.0
    cpu_s: int | None = None
    memory_mb: int = 512
    max_files: int = 64
    max_procs: int = 32
    max_file_mb: int = 16
    max_output_bytes: int = 64 * 1024


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class SandboxResult:
    """What one run did.  ``exit_code`` follows subprocess: negative = killed by that signal."""

    passed: bool
    timed_out: bool
    exit_code: int
    stdout: str
    stderr: str
    truncated: bool
    reason: str
    wall_s: float
    uid: int | None
    leftover_processes: int = 0  # of the uid after the run, counted while the uid is still reserved


@dataclass(frozen=True)
class Isolation:
    drop_uid: bool
    netns: bool
    problems: tuple[str, ...]


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """What this machine allows: dropping to a sandbox uid (root) and a network namespace."""
    problems = []
    root = os.geteuid() == 0
    if not root:
        problems.append("harness is not running as root, so it cannot drop candidate code to an "
                        "unprivileged uid, and rlimits would bind only the harness's own user")
    netns = shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--net", "true"], stdin=subprocess.DEVNULL, capture_output=True, check=False).returncode == 0
    if not netns:
        problems.append("`unshare --net` (util-linux) is missing or not permitted, so the network "
                        "cannot be cut")
    return Isolation(drop_uid=root, netns=netns, problems=tuple(problems))


def check_isolation(allow_unsafe: bool = False) -> Isolation:
    """The isolation to use; HarnessError if it is incomplete and ``allow_unsafe`` is False."""
    found = isolation()
    if found.problems and not allow_unsafe:
        raise HarnessError(f"code sandbox unavailable: {'; '.join(found.problems)}. Run harness as "
                           f"root on Linux with util-linux installed, or {UNSAFE_HINT}")
    return found


def run_python(source: str, limits: Limits = DEFAULT_LIMITS, *, allow_unsafe: bool = False) -> SandboxResult:
    """Run ``source`` as a Python script in the sandbox; passed = exit code 0 within the limits."""
    plan = check_isolation(allow_unsafe)
    return _run(source, limits, plan, sandbox_python(plan))


@functools.lru_cache(maxsize=4)
def sandbox_python(plan: Isolation) -> str:
    """The first interpreter of PYTHON_CANDIDATES that runs under the sandbox uid of ``plan``."""
    if not plan.drop_uid:
        return sys.executable
    tried = []
    for path in dict.fromkeys(PYTHON_CANDIDATES):
        if not os.path.isfile(path):
            continue
        try:
            result = _run("import sys; print(sys.version_info[0])", Limits(wall_s=30), plan, path)
        except HarnessError as exc:  # e.g. exec refused: the path is not reachable for the uid
            tried.append(f"{path} ({exc})")
            continue
        if result.passed and result.stdout.strip() == "3":
            return path
        tried.append(f"{path} ({result.reason})")
    raise HarnessError(f"code sandbox: no Python interpreter runs under the sandbox uid; tried "
                       f"{', '.join(tried) or 'none found'}; install python3 where an unprivileged "
                       f"user can read it (e.g. /usr/bin/python3)")


def _rlimits(limits: Limits, drop_uid: bool) -> dict[str, tuple[int, int]]:
    """soft = hard (the candidate cannot raise them); CPU soft sends SIGXCPU, hard 1 s later SIGKILL."""
    cpu = limits.cpu_s if limits.cpu_s is not None else math.ceil(limits.wall_s)
    out = {
        "RLIMIT_CPU": (cpu, cpu + 1),
        "RLIMIT_AS": (limits.memory_mb << 20,) * 2,
        "RLIMIT_NOFILE": (limits.max_files,) * 2,
        "RLIMIT_FSIZE": (limits.max_file_mb << 20,) * 2,
        "RLIMIT_CORE": (0, 0),
    }
    if drop_uid:  # per-uid count: only meaningful for the sandbox's own uid
        out["RLIMIT_NPROC"] = (limits.max_procs,) * 2
    return out


def _launch(config: dict, netns: bool, status_w: int) -> subprocess.Popen:
    argv = [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(config)]
    if netns:
        argv = ["unshare", "--net", "--", *argv]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, pass_fds=(status_w,), start_new_session=True,
                            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})


def _run(source: str, limits: Limits, plan: Isolation, python: str) -> SandboxResult:
    with slot(plan.drop_uid) as uid, workdir(uid) as cwd:
        (cwd / "main.py").write_text(source, encoding="utf-8")
        if uid is not None:
            os.chown(cwd / "main.py", uid, uid)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "TMPDIR": str(cwd), "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        status_r, status_w = os.pipe()
        config = {"uid": uid, "gid": uid, "cwd": str(cwd), "status_fd": status_w, "env": env,
                  "argv": [python, "-I", "-S", "main.py"], "rlimits": _rlimits(limits, plan.drop_uid)}
        start = time.monotonic()
        try:
            proc = _launch(config, plan.netns, status_w)
        finally:
            os.close(status_w)
        try:
            got = collect(proc, status_r, limits.wall_s, limits.max_output_bytes)
        finally:
            os.close(status_r)
        wall = time.monotonic() - start
        leftover = process_count(uid) if uid is not None else 0
        if uid is not None:
            remove_strays(uid)
    return _result(got, limits, wall, uid, leftover)


def _result(got, limits: Limits, wall: float, uid: int | None, leftover: int) -> SandboxResult:
    if got.error is not None:
        raise HarnessError(f"code sandbox: could not start candidate code: {got.error}")
    if got.status is None:
        raise HarnessError(f"code sandbox: launcher failed (exit {got.launcher_rc}): "
                           f"{got.stderr.strip()[-500:] or 'no message'}")
    if leftover:
        raise HarnessError(f"code sandbox: {leftover} process(es) of sandbox uid {uid} outlived the "
                           f"launcher's sweep; isolation cannot be trusted on this machine")
    code = os.waitstatus_to_exitcode(got.status)
    passed = code == 0 and not got.timed_out
    return SandboxResult(passed=passed, timed_out=got.timed_out, exit_code=code, stdout=got.stdout,
                         stderr=got.stderr, truncated=got.truncated,
                         reason=_reason(code, got.timed_out, got.stderr, limits), wall_s=wall, uid=uid,
                         leftover_processes=leftover)


def _reason(code: int, timed_out: bool, stderr: str, limits: Limits) -> str:
    """One line saying why a run passed or failed."""
    if timed_out:
        return f"wall time limit exceeded ({limits.wall_s:g} s)"
    if code == 0:
        return "passed"
    if code == -signal.SIGXCPU:
        return "cpu time limit exceeded"
    if code == -signal.SIGXFSZ:
        return f"file size limit exceeded ({limits.max_file_mb} MB)"
    if code == -signal.SIGKILL:
        return "killed by SIGKILL (e.g. the hard cpu time limit)"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1].strip()[:200] if lines else "no error output"
    return f"exit code {code}: {last}"

