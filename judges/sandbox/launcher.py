"""The sandbox's launcher process: run by ``judges.sandbox.runner`` as ``python -I -S THIS_FILE CONFIG``.

Standard library only, and single-threaded, so forking here is safe (the
harness itself may be running many threads).  It is started as root inside a
fresh network namespace (``unshare --net``) and:

1. marks itself a child subreaper, so every descendant of the candidate that
   is orphaned is re-parented here and reaped here (the machine's PID 1 may
   never reap, and unreaped zombies would keep counting against RLIMIT_NPROC);
2. forks the candidate process C, which starts its own session and process
   group, sets its rlimits, drops to the sandbox uid/gid (supplementary groups
   cleared, then gid, then uid, then checks that root cannot be regained) and
   execs the interpreter on the candidate script;
3. reaps until C is gone, then kills every process left with the sandbox uid
   (``kill(-1, SIGKILL)`` sent *as* that uid, which reaches exactly that uid's
   processes, including ones that left C's process group with setsid), and
   reaps those too.

It reports on the status pipe, one JSON object per line: ``{"child": PID}``
after the fork, ``{"error": TEXT}`` if C could not exec, and ``{"status":
RAW_WAIT_STATUS}`` at the end.  C closes the pipe on exec (close-on-exec), so
candidate code never holds it.
"""

import ctypes
import json
import os
import resource
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def report(fd: int, **message) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def drop_privileges(uid: int, gid: int) -> None:
    """setgroups([]), setgid, setuid; then prove that root is gone for good."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise OSError(f"privileges not fully dropped: uids {os.getresuid()}, gids {os.getresgid()}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise OSError("could regain uid 0 after dropping privileges")


def exec_candidate(config: dict) -> None:
    """In the forked child: new session, rlimits, drop privileges, exec.  Never returns."""
    os.setsid()
    for name, (soft, hard) in config["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if config["uid"] is not None:
        drop_privileges(config["uid"], config["gid"])
    os.chdir(config["cwd"])
    os.set_inheritable(config["status_fd"], False)
    os.set_blocking(config["status_fd"], True)
    os.execve(config["argv"][0], config["argv"], config["env"])


def wait_for(pid: int) -> int:
    """Reap children (orphans included) until ``pid`` is reaped; its raw wait status."""
    while True:
        reaped, status = os.waitpid(-1, 0)
        if reaped == pid:
            return status


def kill_uid(uid: int, gid: int) -> None:
    """Send SIGKILL to every process of ``uid`` from a helper running as that uid."""
    helper = os.fork()
    if helper == 0:
        try:
            drop_privileges(uid, gid)
            os.kill(-1, signal.SIGKILL)  # all processes this uid may signal; not the caller itself
        except ProcessLookupError:
            pass
        finally:
            os._exit(0)
    wait_for(helper)


def reap_all(block: bool) -> None:
    """Reap every remaining child; with ``block`` False only those already dead."""
    flags = 0 if block else os.WNOHANG
    while True:
        try:
            pid, _ = os.waitpid(-1, flags)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    config = json.loads(sys.argv[1])
    fd = config["status_fd"]
    become_subreaper()
    child = os.fork()
    if child == 0:
        try:
            exec_candidate(config)
        except BaseException as exc:  # noqa: BLE001 (any failure before exec is reported, then exit)
            report(fd, error=f"{type(exc).__name__}: {exc}")
        os._exit(127)
    report(fd, child=child)
    status = wait_for(child)
    if config["uid"] is not None:
        kill_uid(config["uid"], config["gid"])
        reap_all(block=True)
    else:  # unsafe mode: no uid of its own to sweep; kill C's group, leave escapees
        try:
            os.killpg(child, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        reap_all(block=False)
    report(fd, status=status)


if __name__ == "__main__":
    main()
