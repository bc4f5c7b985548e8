"""Attack tests for the code sandbox.  They run for real and never skip: CI runs as root with
util-linux ``unshare``, and on a machine without them they fail (test_isolation_is_complete).

Each attack ends by checking that the sandbox uids have no process left and that a plain run
still passes (the runner survived).  The two "unsafe" tests are the controls: with a piece of
isolation switched off, the same attack succeeds, so the checks above can fail.
"""

import os
import socket
import subprocess
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.errors import HarnessError
from judges.sandbox import runner as sandbox
from judges.sandbox.plumbing import SLOT_COUNT, SLOT_UID_BASE, process_count
from judges.sandbox.runner import Isolation, Limits, isolation, run_python

SANDBOX_UIDS = range(SLOT_UID_BASE, SLOT_UID_BASE + SLOT_COUNT)


@pytest.fixture
def sentinel():
    """A world-readable file, root-owned, in a world-traversable dir outside any sandbox dir."""
    folder = Path(tempfile.mkdtemp(prefix="harness-sentinel-"))
    folder.chmod(0o755)
    path = folder / "sentinel.txt"
    path.write_text("original\n")
    path.chmod(0o644)
    before = (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_mode)
    yield path, before
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()


@pytest.fixture
def listener():
    """A port listening on the host's 127.0.0.1 (reachable from the test process itself)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            server.accept()[0].close()
        server.setblocking(False)
        yield server, port


@dataclass
class Guard:
    prefix: str  # source run before each attack: tries to write the sentinel and reach the port
    results: list = field(default_factory=list)


@pytest.fixture
def guard(sentinel, listener):
    """Each attack first tries the sentinel and the port; afterwards the test asserts that the
    sentinel is unchanged, nothing connected, the process count of each run's uid was back to its
    baseline (0: a uid with processes is never handed out) and the runner still works.

    The count is taken by the sandbox while it still holds the uid, so sandboxes of other test
    runs on the same machine cannot disturb it."""
    (path, before), (server, port) = sentinel, listener
    checks = Guard(GUARD_PREFIX.format(path=str(path), port=port))
    yield checks
    assert checks.results and all(r.uid in SANDBOX_UIDS for r in checks.results)
    assert [r.leftover_processes for r in checks.results] == [0] * len(checks.results)
    assert (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_mode) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["sentinel.txt"]
    with pytest.raises(BlockingIOError):
        server.accept()
    assert run_python("print('alive')").stdout == "alive\n"  # the runner survived the attack


GUARD_PREFIX = """\
import os as _os, socket as _socket
for _attempt in (lambda: open({path!r}, "w").write("pwned"), lambda: _os.remove({path!r}),
                 lambda: _socket.create_connection(("127.0.0.1", {port}), timeout=1)):
    try:
        _attempt()
    except OSError:
        pass
"""


def run(source: str, guard: Guard | None = None, **limits) -> sandbox.SandboxResult:
    result = run_python((guard.prefix if guard else "") + textwrap.dedent(source), Limits(**limits))
    if guard:
        guard.results.append(result)
    return result


TAMPER = """
import os, sys
path = {path!r}
assert open(path).read() == "original\\n"  # readable: only write protection is tested
failed = 0
for attempt in (lambda: open(path, "w").write("pwned"), lambda: open(path, "a").write("pwned"),
                lambda: os.remove(path), lambda: os.rename(path, path + ".x"),
                lambda: os.chmod(path, 0o777), lambda: os.utime(path, (0, 0)),
                lambda: open(os.path.join(os.path.dirname(path), "new"), "w")):
    try:
        attempt()
    except PermissionError:
        failed += 1
print(failed)
"""


def test_isolation_is_complete_on_this_machine():
    found = isolation()
    assert found.problems == (), f"the sandbox needs root and util-linux unshare here: {found.problems}"


def test_candidate_runs_unprivileged_in_its_own_dir(guard):
    result = run(guard=guard, source="""
        import os
        print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups(), os.getcwd() == os.environ["HOME"])
        print(os.getcwd())
    """)
    ids, cwd = result.stdout.splitlines()
    assert result.passed and result.uid in SANDBOX_UIDS
    assert ids == f"{result.uid} {result.uid} {result.uid} [] True"
    assert not Path(cwd).exists()  # the work dir is removed afterwards


def test_sentinel_outside_the_temp_dir_is_unchanged(sentinel):
    path, before = sentinel
    result = run(TAMPER.format(path=str(path)))
    assert result.passed, result.stderr
    assert result.stdout == "7\n"  # every write attempt failed with PermissionError
    assert (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_mode) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["sentinel.txt"]


def test_no_connection_to_a_local_listening_port(listener):
    server, port = listener
    result = run(f"""
        import socket, sys
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
        except OSError as exc:
            print("refused", exc.errno)
            sys.exit(0)
        sys.exit(3)
    """)
    with pytest.raises(BlockingIOError):  # nothing arrived from the sandbox
        server.accept()
    assert result.passed, (result.reason, result.stdout)
    assert result.stdout.startswith("refused")


def test_fork_bomb_is_stopped_and_killed(guard):
    """Every process forks forever, half of them leaving the group with setsid."""
    result = run(guard=guard, source="""
        import os
        while True:
            try:
                if os.fork() == 0 and os.getpid() % 2:
                    os.setsid()
            except OSError:
                pass
    """, wall_s=1.0, max_procs=16)
    assert result.timed_out and not result.passed
    assert result.reason == "wall time limit exceeded (1 s)"


def test_rlimit_nproc_caps_the_uid(guard):
    """Processes of the uid are capped at max_procs: the main one plus max_procs - 1 forks."""
    result = run(guard=guard, source="""
        import os, time
        forks = 0
        while True:
            try:
                pid = os.fork()
            except BlockingIOError:
                break
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            forks += 1
        print(forks)
    """, max_procs=8)
    assert result.passed and result.stdout == "7\n"


def test_daemon_left_behind_is_killed(guard):
    result = run(guard=guard, source="""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60)
            os._exit(0)
        print("main done")
    """)
    assert result.passed and result.stdout == "main done\n"
    assert result.wall_s < 10


def test_infinite_loop_is_killed_at_the_wall_limit(guard):
    result = run(guard=guard, source="while True:\n    pass\n", wall_s=1.0)
    assert result.timed_out and not result.passed and result.exit_code == -9
    assert 1.0 <= result.wall_s < 8


def test_cpu_limit(guard):
    result = run(guard=guard, source="while True:\n    pass\n", wall_s=20, cpu_s=1)
    assert not result.timed_out and result.reason == "cpu time limit exceeded"


@pytest.mark.parametrize("source", ["x = bytearray(64 << 30)",
                                    "xs = []\nwhile True:\n    xs.append(bytearray(32 << 20))"])
def test_huge_allocation_fails_inside_the_sandbox(guard, source):
    result = run(guard=guard, source=source, memory_mb=256)
    assert not result.passed and not result.timed_out
    assert result.reason == "exit code 1: MemoryError"


def test_output_is_capped(guard):
    result = run(guard=guard, source="import sys\nsys.stdout.write('o' * 300000)\nsys.stderr.write('e' * 300000)\n",
                 max_output_bytes=1000)
    assert result.passed and result.truncated
    assert result.stdout == "o" * 1000 and result.stderr == "e" * 1000


def test_file_size_and_open_file_limits(guard):
    big = run(guard=guard, source="""
        import os
        try:
            open("big", "wb").write(b"x" * (2 << 20))
        except OSError as exc:  # Python ignores SIGXFSZ, so the write fails with EFBIG
            print(exc.errno, os.path.getsize("big"))
    """, max_file_mb=1)
    assert big.passed and big.stdout == "27 1048576\n"
    many = run(guard=guard, source="""
        import errno
        handles = []
        try:
            while True:
                handles.append(open("f%d" % len(handles), "w"))
        except OSError as exc:
            print(len(handles), exc.errno == errno.EMFILE)
    """, max_files=16)
    opened, emfile = many.stdout.split()
    assert many.passed and emfile == "True" and 0 < int(opened) <= 16 - 3  # stdin, stdout, stderr


def test_parallel_runs_get_distinct_uids(guard):
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: run(guard=guard, source="import os, time\ntime.sleep(0.3)\nprint(os.getuid())"),
                                range(3)))
    assert all(r.passed for r in results)
    assert len({r.stdout for r in results}) == 3


def test_refuses_without_isolation_unless_unsafe(monkeypatch):
    """Control for the network test: without the namespace, the same connect succeeds."""
    monkeypatch.setattr(sandbox, "isolation", lambda: Isolation(True, False, ("no network namespace",)))
    with pytest.raises(HarnessError, match="code sandbox unavailable: no network namespace.*unsafe"):
        run_python("pass")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        result = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)",
                            allow_unsafe=True)
    assert result.passed, result.reason


def test_unsafe_without_uid_drop_can_write_the_sentinel(monkeypatch, sentinel):
    """Control for the sentinel test: running as root, the same writes succeed."""
    monkeypatch.setattr(sandbox, "isolation", lambda: Isolation(False, True, ("not root",)))
    with pytest.raises(HarnessError, match="not root"):
        run_python("pass")
    path, before = sentinel
    result = run_python(textwrap.dedent(TAMPER.format(path=str(path))).replace(
        "lambda: os.remove(path), lambda: os.rename(path, path + \".x\"),", ""), allow_unsafe=True)
    assert result.passed and result.uid is None and os.geteuid() == 0
    assert result.stdout == "0\n" and path.read_bytes() != before[0]


def test_process_count_sees_a_process_of_a_uid():
    """The leftover count the attack tests rely on does see processes (and zombies) of a uid."""
    uid = SLOT_UID_BASE + SLOT_COUNT - 1  # the last slot: free unless 64 sandboxes run at once
    before = process_count(uid)
    proc = subprocess.Popen(["sleep", "30"], user=uid, group=uid, extra_groups=[])
    try:
        assert process_count(uid) == before + 1
        proc.kill()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # dead but not reaped: a zombie
        assert process_count(uid) == before + 1
    finally:
        proc.kill()
        proc.wait()
    assert process_count(uid) == before
