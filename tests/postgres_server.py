"""A real PostgreSQL server for tests: a new cluster in a temporary folder, on a free loopback port.

The binaries are Debian's when installed (``initdb`` in PATH, or ``/usr/lib/postgresql/*/bin``),
else the ones the ``pgserver`` wheel ships (a ``dev`` dependency, so ``make test`` installs it; only
its binaries are used, not its Python code, which adds a system user and widens folder permissions
when run as root).  PostgreSQL refuses to run as root, so as root the cluster belongs to ``nobody``
and its programs run as that user; binaries ``nobody`` cannot reach (a virtual environment under
``/root``) are copied into the temporary folder first.

``local_postgres`` raises ``PostgresUnavailable`` with the reason when no server can be had that
way; a test turns it into a skip.  Anything that fails after the binaries are found is an error.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness.procs import free_port, stop

UNPRIVILEGED = "nobody"


class PostgresUnavailable(Exception):
    """No PostgreSQL server binaries could be found or run here; the message says why."""


def binary_dirs() -> list[Path]:
    """Folders holding both ``initdb`` and ``postgres``, Debian's first, then pgserver's."""
    found = []
    if shutil.which("initdb"):
        found.append(Path(shutil.which("initdb")).resolve().parent)
    found += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version(p.parent.name), reverse=True)
    spec = importlib.util.find_spec("pgserver")  # finds the package without importing it
    if spec and spec.submodule_search_locations:
        found += [Path(loc) / "pginstall" / "bin" for loc in spec.submodule_search_locations]
    return [d for d in dict.fromkeys(found) if (d / "initdb").is_file() and (d / "postgres").is_file()]


def _version(name: str) -> int:
    return int(name) if name.isdigit() else 0


def _runner() -> dict:
    """``subprocess`` keywords that run a program as the cluster's owner (``nobody`` when we are root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(UNPRIVILEGED)
    except KeyError:
        raise PostgresUnavailable(f"running as root and there is no user {UNPRIVILEGED!r} to run PostgreSQL as "
                                  "(it refuses to run as root)") from None
    return {"user": UNPRIVILEGED, "group": pwd.getpwnam(UNPRIVILEGED).pw_gid}


def _usable_binaries(home: Path, as_owner: dict) -> Path:
    """A binary folder the cluster's owner can run, copied under ``home`` when it cannot reach the original."""
    dirs = binary_dirs()
    if not dirs:
        raise PostgresUnavailable("no PostgreSQL server binaries: no initdb in PATH or /usr/lib/postgresql/*/bin "
                                  "(Debian: apt-get install postgresql), and no pgserver package "
                                  "(pip install -e '.[dev]' installs it)")
    tried = []
    for bin_dir in dirs:
        for copy in (False, True):
            candidate = _copy_install(bin_dir, home) if copy else bin_dir
            try:
                check = subprocess.run([str(candidate / "initdb"), "--version"], check=False, capture_output=True,
                                       text=True, **as_owner)
            except OSError as exc:  # e.g. EACCES: the owner cannot reach the folder
                tried.append(f"{candidate}: {exc}")
                continue
            if check.returncode == 0:
                return candidate
            tried.append(f"{candidate}: {check.stderr.strip() or check.returncode}")
    raise PostgresUnavailable("PostgreSQL binaries found but none runs here: " + "; ".join(tried))


def _copy_install(bin_dir: Path, home: Path) -> Path:
    """Copy the installation of ``bin_dir`` (bin, lib, share) under ``home``; its ``bin`` there.

    The wheel's binaries find their libraries by a relative rpath (``$ORIGIN/../../../pgserver.libs``),
    so the package's folder and its ``.libs`` sibling keep their places.
    """
    install, package = bin_dir.parent, bin_dir.parent.parent
    site = home / "site"
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(install, site / package.name / install.name, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name, symlinks=True)
    return site / package.name / install.name / "bin"


@contextlib.contextmanager
def local_postgres(database: str = "mlflow", timeout_s: float = 60.0) -> Iterator[str]:
    """A new PostgreSQL cluster with ``database`` in it; yields its URL ``postgresql://postgres@127.0.0.1:PORT/DB``.

    The server runs in a process group of its own and is stopped, and its folder removed, at exit.
    """
    if importlib.util.find_spec("psycopg") is None:
        raise PostgresUnavailable("no psycopg (MLflow's PostgreSQL driver): pip install -e '.[dev]' installs it")
    as_owner = _runner()
    # As root the folder's parents must be passable for ``nobody``: /tmp is, a private TMPDIR may not be.
    home = Path(tempfile.mkdtemp(prefix="harness-pg-", dir="/tmp" if as_owner else None))
    proc = log = None
    try:
        if as_owner:
            os.chmod(home, 0o755)
            os.chown(home, pwd.getpwnam(UNPRIVILEGED).pw_uid, as_owner["group"])
        bin_dir = _usable_binaries(home, as_owner)
        data = home / "data"
        init = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                               "-E", "UTF8", "--no-locale", "--no-sync"], check=False, capture_output=True, text=True,
                              timeout=120, **as_owner)
        if init.returncode != 0:
            raise RuntimeError(f"{bin_dir / 'initdb'} failed ({init.returncode}):\n{init.stdout}{init.stderr}")
        port = free_port()
        log = (home / "postgres.log").open("w")
        proc = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(home),
                                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **as_owner)
        _create_database(proc, port, database, home / "postgres.log", timeout_s)
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        if proc is not None:
            stop(proc, grace_s=10.0)
        if log is not None:
            log.close()
        shutil.rmtree(home, ignore_errors=True)


def _create_database(proc: subprocess.Popen, port: int, database: str, log: Path, timeout_s: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True)
            break
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not accept connections on port {port}:\n"
                                   f"{log.read_text()[-3000:]}") from None
            time.sleep(0.2)
    with conn:  # autocommit: CREATE DATABASE cannot run inside a transaction
        conn.execute(f'CREATE DATABASE "{database}"')
