"""One thin module over MLflow: where the store is, and the run tree's primitives.

The store is chosen in this order: ``--tracking-uri``, then the
``MLFLOW_TRACKING_URI`` environment variable, then the spec's
``tracking.uri``, then ``sqlite:///<results_dir>/mlflow.db``.  Relative paths
are made absolute at start and experiments get an explicit artifact location,
so nothing lands in ``./mlruns``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from harness.errors import HarnessError
from harness.procs import claim_port, stop
from harness.profile import phase, timed

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    artifact_root: str


def _absolute_uri(uri: str) -> str:
    """Resolve a relative sqlite or file store against the current directory."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if "://" not in uri:
        return str(Path(uri).resolve())
    return uri


def resolve_store(cli_uri: str | None, spec_uri: str | None, spec_artifact_root: str | None,
                  results_dir: str) -> Store:
    """The tracking store and artifact root, both absolute, by the documented precedence."""
    root = Path(results_dir).resolve()
    uri = cli_uri or os.environ.get("MLFLOW_TRACKING_URI") or spec_uri or f"sqlite:///{root / 'mlflow.db'}"
    artifacts = Path(spec_artifact_root).resolve() if spec_artifact_root else root / "artifacts"
    uri = _absolute_uri(uri)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return Store(uri, str(artifacts))


def _quiet_mlflow() -> None:
    import logging

    # With an http(s) store MLflow prints "View run ... at: URL" to stdout when a run ends, which would break
    # ``--format json`` (stdout carries only the JSON); the runs' URLs are in ``harness ls`` and the UI.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _whole(write):
    """Run a store write to its end even when Ctrl-C arrives during it, then raise KeyboardInterrupt.

    An interrupt inside SQLAlchemy logs a database error and can leave half a batch;
    held for the few milliseconds a write takes, it lands between writes instead.
    """
    @functools.wraps(write)
    def whole(*args, **kwargs):
        if args and isinstance(args[0], Tracker):
            args[0].flush()  # metrics queued before this write land before it
        if threading.current_thread() is not threading.main_thread():
            return write(*args, **kwargs)  # signals are delivered to the main thread only
        held = []
        previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
        try:
            with phase("store"):
                return write(*args, **kwargs)
        finally:
            signal.signal(signal.SIGINT, previous)
            if held:
                raise KeyboardInterrupt

    return whole


def create_sqlite_whole(uri: str) -> None:
    """Create a new sqlite store's tables in a temporary file, then link it into place.

    MLflow migrates a new store in many steps; a process killed in between left a file
    that every later open failed on ("table _alembic_tmp_experiments already exists").
    ``os.link`` fails if the store appeared meanwhile (another process made it): that one is kept.
    The migrated empty store is copied from a per-MLflow-version template (``_schema_template``):
    migrating takes seconds, copying milliseconds.
    """
    _quiet_mlflow()

    path = Path(uri.removeprefix("sqlite:///"))
    if not uri.startswith("sqlite:///") or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    template = _schema_template()
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".mlflow-new-", suffix=".db", delete=False) as f:
        tmp = Path(f.name)
    try:
        if template is not None:
            shutil.copyfile(template, tmp)
        else:
            _migrate(tmp)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _migrate(path: Path) -> None:
    """MLflow's own table creation and migrations, on an empty sqlite file at ``path``."""
    from mlflow.store.db.utils import _initialize_tables
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{path}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def _schema_template() -> Path | None:
    """An empty store migrated by this MLflow version, made once per user (under ``user_cache_dir()``).

    The schema is MLflow's alone (its migrations, fixed per version), so every new store can start as a
    copy.  None where the cache cannot be written: the caller migrates in place, as before.
    """
    from harness.cache import user_cache_dir

    try:
        root = user_cache_dir() / "mlflow-schema"
        template = root / f"mlflow-{metadata.version('mlflow')}.db"
        if template.exists():
            return template
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".new-", suffix=".db", delete=False) as f:
            tmp = Path(f.name)
        try:
            _migrate(tmp)
            os.replace(tmp, template)  # whole: a reader sees no template or a complete one
        finally:
            tmp.unlink(missing_ok=True)
        return template
    except (OSError, metadata.PackageNotFoundError):
        return None


class Tracker:
    """The run-tree operations harness needs, on an explicit ``MlflowClient``; writes are whole (``_whole``).

    Metrics (``log_metrics``, every logged training step) are written by a background thread, in order,
    while training goes on: each write is a sqlite commit that waits for the disk.  Every other
    operation first waits until the queued metrics are written (``flush``), and so does exit (atexit);
    a failed metric write raises at the next ``flush``.
    """

    @timed("store")
    def __init__(self, store: Store):
        from mlflow.tracking import MlflowClient

        _quiet_mlflow()  # after the import, which sets mlflow's own log level

        create_sqlite_whole(store.tracking_uri)
        self.store = store
        self.client = MlflowClient(tracking_uri=store.tracking_uri)
        self._queue: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None

    def flush(self) -> None:
        """Wait until every queued metric is written; raise the first write error, if any."""
        if self._writer is not None:
            with phase("store"):
                self._queue.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise HarnessError(f"tracking store {self.store.tracking_uri!r}: writing metrics failed ({error})") from error

    def _write_queued(self) -> None:
        while True:
            run_id, batch = self._queue.get()
            try:
                if self._error is None:
                    self.client.log_batch(run_id, metrics=batch)
            except BaseException as exc:  # noqa: BLE001 - kept for flush() to raise in the main thread
                self._error = exc
            finally:
                self._queue.task_done()

    @timed("store")
    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created with an explicit artifact location."""
        self.flush()
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        from mlflow.exceptions import MlflowException

        location = Path(self.store.artifact_root) / _safe(name)
        try:
            return self.client.create_experiment(name, artifact_location=location.as_uri())
        except MlflowException:
            # Another writer (a parallel worker) created it between the look-up and here: use theirs.
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    @timed("store")
    def find_run(self, experiment_id: str, tags: dict[str, str]):
        """The newest run of the experiment carrying all ``tags``, or None."""
        self.flush()
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        runs = self.client.search_runs([experiment_id], " and ".join(clauses), max_results=1,
                                       order_by=["attributes.start_time DESC"])
        return runs[0] if runs else None

    @_whole
    def create_run(self, experiment_id: str, name: str, tags: dict, parent_id: str | None = None) -> str:
        tags = dict(tags)
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        return self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id

    @_whole
    def set_status(self, run_id: str, status: str) -> None:
        self.client.update_run(run_id, status=status)
        if status in ("FINISHED", "FAILED", "KILLED"):
            self.client.set_terminated(run_id, status=status)

    @_whole
    def set_tags(self, run_id: str, tags: dict) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    @_whole
    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(run_id).data.params
        new = [Param(k, _param_value(v)) for k, v in params.items() if k not in have]
        for i in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict, step: int = 0) -> None:
        """Queue ``metrics`` at ``step`` for the background writer (timestamped now)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if not batch:
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_queued, name="harness-metrics", daemon=True)
            self._writer.start()
            atexit.register(self._flush_at_exit)
        self._queue.put((run_id, batch))

    def _flush_at_exit(self) -> None:
        with contextlib.suppress(BaseException):
            self._queue.join()

    @_whole
    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Write ``text`` to ``artifact_file`` (a relative path) in the run's artifacts."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(text)
            parent = str(Path(artifact_file).parent)
            self.log_file(run_id, path, None if parent == "." else parent)

    def log_jsonl(self, run_id: str, rows: list[dict], artifact_file: str) -> None:
        self.log_text(run_id, "".join(json.dumps(r, default=str) + "\n" for r in rows), artifact_file)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _param_value(value) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a result, for ``harness.versions``."""
    out = {}
    for pkg in ("harness", "torch", "transformers", "peft", "accelerate", "trl", "mlflow", "tokenizers", "vllm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_sha() -> str:
    """The git commit of the harness checkout, with ``-dirty`` for uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def require_reachable(tracker: Tracker) -> None:
    """Fail early with a clear message when the store cannot be opened."""
    try:
        tracker.client.search_experiments(max_results=1)
    except Exception as exc:
        raise HarnessError(f"tracking store {tracker.store.tracking_uri!r}: cannot open ({exc})") from exc


def ui_command(args) -> int:
    """``harness ui``: the MLflow UI on the project's store, bound to 127.0.0.1.

    The UI (and the workers it starts) runs in a process group of its own, stopped as a whole
    when harness exits or is signalled (SIGINT, SIGTERM, SIGHUP), so no server outlives it.
    A busy port is an error; ``--port 0`` picks a free one.
    """
    store = resolve_store(args.tracking_uri, None, None, args.results_dir)
    port = claim_port("127.0.0.1", args.port, "harness ui")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store.tracking_uri,
           "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]  # one user; mlflow's default 4 workers were killed at startup on a loaded 2-core machine
    print(f"MLflow UI for {store.tracking_uri} at http://127.0.0.1:{port}", flush=True)
    proc = subprocess.Popen(cmd, start_new_session=True)

    def leave(signum, frame):
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        stop(proc, grace_s=10.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
