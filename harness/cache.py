"""Content-addressed storage: canonical JSON, digests and atomic writes, the ground of every cache and id;
and the caches under ``<results_dir>/cache`` built on them.

Trial ids, stage-cache keys, reference-log-prob keys and eval-cache keys are all
``digest`` of a JSON-able description, so the same description always names the
same entry.  Entries are written with ``atomic_path``: a killed process leaves
either the old entry or the new one, never half of one.  Every cache is safe to delete.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.errors import HarnessError


def user_cache_dir() -> Path:
    """Where built toy models live, shared by every results_dir of the user: ``$HARNESS_CACHE``, else
    ``$XDG_CACHE_HOME/harness``, else ``~/.cache/harness``."""
    if os.environ.get("HARNESS_CACHE"):
        return Path(os.environ["HARNESS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "harness"


def canonical_json(obj: Any) -> str:
    """One JSON text per value: sorted keys, no spaces, no NaN; pydantic models and dataclasses as dicts."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_plain)


def _plain(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
    raise TypeError(f"not JSON-serializable: {type(obj).__name__}")


def digest(obj: Any, n: int = 64) -> str:
    """The first ``n`` hex digits of sha256 over the canonical JSON of ``obj``: the one hash of configs."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``final`` to write (a file or a directory); on success it
    replaces ``final``, on any error it is removed and ``final`` is left as it was.

    The temporary name carries the host name and the process id, so two processes writing the same
    entry never write into each other's files, also from two nodes on a shared file system; the last
    rename wins, and both wrote the same content.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and final.is_dir():
            shutil.rmtree(final)  # os.replace cannot put a directory over a non-empty one
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes on ``path`` (created if missing), held for the ``with`` block.

    ``flock``: the kernel drops it when its holder dies, so a killed process never leaves a stale lock.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def writable_dir(path: Path, what: str) -> Path:
    """``path``, created if needed, once a probe file could be written in it; else a HarnessError naming ``what``.

    A real write, not ``os.access``: root passes every permission check, yet cannot write
    below a regular file or on a read-only or full file system.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise HarnessError(f"{what} {path}: cannot write there ({exc.strerror or exc}); fix its permissions "
                           f"or choose another {what}") from None
    return path


def _jsonl(rows: list[dict], **dumps) -> str:
    return "".join(json.dumps(r, **dumps) + "\n" for r in rows)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------- the stage, eval and reference caches


@dataclasses.dataclass(frozen=True)
class StageCache:
    """Trained stage outputs: ``<root>/stages/<key>/model`` (a checkpoint) and ``meta.json`` beside it.

    ``key`` is ``harness.config.grid.stage_key`` (resolved stage config, input model, data fingerprint),
    so trials that share a prefix of identical stages train it once.  ``meta.json`` is written last,
    atomically: an entry without it is incomplete and is trained again.
    """

    root: Path  # <results_dir>/cache

    def entry(self, key: str) -> Path:
        return self.root / "stages" / key

    def model_dir(self, key: str) -> Path:
        return self.entry(key) / "model"

    def meta(self, key: str) -> dict | None:
        """The complete entry's meta (``run_id``, ``trial_id``, ``stage``, ``steps``), or None."""
        marker = self.entry(key) / "meta.json"
        return json.loads(marker.read_text()) if marker.exists() else None

    def mark_complete(self, key: str, meta: dict) -> None:
        with atomic_path(self.entry(key) / "meta.json") as tmp:
            tmp.write_text(json.dumps(meta))

    def lock(self, key: str):
        """Held while a process trains entry ``key``: a parallel trial that needs the same stage waits,
        then finds the entry complete instead of training it a second time."""
        return file_lock(self.root / "locks" / f"stage-{key}.lock")


EVAL_CACHE_LAYOUT = 3  # bump when the files of an eval cache entry change


@dataclasses.dataclass(frozen=True)
class EvalKey:
    """What one suite's results on one model depend on: the eval cache key."""

    model: str  # model_identity of the evaluated model
    reference: str  # model_identity of the KL reference (the trial's starting model)
    suite: str
    options: dict  # the suite's resolved options
    generation: dict  # the decoding settings
    judge: dict | None  # the judge settings that decide verdicts; None for unjudged suites
    baseline: str | None  # what the baseline's outputs depend on; None without a baseline

    def digest(self) -> str:
        return digest([EVAL_CACHE_LAYOUT, self.model, self.reference, self.suite, self.options,
                       self.generation, self.judge, self.baseline], 16)


@dataclasses.dataclass(frozen=True)
class EvalCache:
    """Suite results and base-model baselines.

    ``<root>/evals/<EvalKey digest>/`` holds ``metrics.json``, ``outputs/<suite>.jsonl`` and
    ``judgments/<suite>.jsonl``; ``<root>/baselines/<digest>.jsonl`` holds the starting model's
    outputs on a suite's prompts, shared by the trials of a sweep.
    """

    root: Path  # <results_dir>/cache

    def entry(self, key: EvalKey) -> Path:
        return self.root / "evals" / key.digest()

    def metrics(self, key: EvalKey) -> dict | None:
        """The cached metrics of a complete entry, or None."""
        path = self.entry(key) / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else None

    def rows_file(self, key: EvalKey, kind: str, suite: str) -> Path:
        """The ``outputs`` or ``judgments`` file of an entry (logged as the run's artifact)."""
        return self.entry(key) / kind / f"{suite}.jsonl"

    def write(self, key: EvalKey, suite: str, outputs: list[dict], judgments: list[dict],
              metrics: dict) -> None:
        """Write a suite's results atomically (a killed run leaves no half entry)."""
        with atomic_path(self.entry(key)) as tmp:
            for kind, rows in (("outputs", outputs), ("judgments", judgments)):
                (tmp / kind).mkdir(parents=True)
                (tmp / kind / f"{suite}.jsonl").write_text(_jsonl(rows, default=str))
            (tmp / "metrics.json").write_text(json.dumps(metrics))

    def _baseline_file(self, identity: list) -> Path:
        return self.root / "baselines" / (digest(identity, 16) + ".jsonl")

    def baseline(self, identity: list) -> list[dict] | None:
        """The cached baseline rows for ``identity`` (reference key, suite, items, decoding), or None."""
        path = self._baseline_file(identity)
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else None

    def write_baseline(self, identity: list, rows: list[dict]) -> None:
        with atomic_path(self._baseline_file(identity)) as tmp:
            tmp.write_text(_jsonl(rows))

    def baseline_lock(self, identity: list):
        """Held while one process generates the baseline: parallel trials that need it wait, then read it."""
        return file_lock(self.root / "locks" / f"baseline-{self._baseline_file(identity).stem}.lock")


@dataclasses.dataclass(frozen=True)
class ReferenceCache:
    """Reference log-prob statistics, one tensor file per key: ``<root>/reflogps/<key>.pt``.

    The key is ``digest(description, 16)`` of everything that decides the examples, their tokens and the
    reference model; an entry holds sums and token counts, so any reduction derives from it.
    """

    root: Path  # <results_dir>/cache

    def path(self, description: Any) -> Path:
        return self.root / "reflogps" / f"{digest(description, 16)}.pt"

    def load(self, description: Any, rows: int):
        """The cached [rows, k] tensor, or None when absent or made for another number of rows."""
        import torch  # torch only where reference statistics are read: config and run import this module

        path = self.path(description)
        if not path.exists():
            return None
        stats = torch.load(path)
        return stats if stats.shape[0] == rows else None

    def save(self, description: Any, stats) -> None:
        import torch

        with atomic_path(self.path(description)) as tmp:
            torch.save(stats, tmp)

    def lock(self, description: Any):
        """Held while one process computes the entry: a parallel trial that needs it waits, then loads it."""
        return file_lock(self.root / "locks" / f"reflogps-{self.path(description).stem}.lock")
