"""Content-addressed storage: canonical JSON, digests and atomic writes, the ground of every cache and id.

Trial ids, stage-cache keys, reference-log-prob keys and eval-cache keys are all
``digest`` of a JSON-able description, so the same description always names the
same entry.  Entries are written with ``atomic_path``: a killed process leaves
either the old entry or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel


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

    The temporary name carries the process id, so two processes writing the same entry never
    write into each other's files; the last rename wins, and both wrote the same content.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and final.is_dir():
            shutil.rmtree(final)  # os.replace cannot put a directory over a non-empty one
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- Reference log-probs (harness.train.reference) ---------------------------------------------------------


class ReferenceCache:
    """Reference log-prob statistics, one tensor file per key: ``<cache_dir>/reflogps/<key>.pt``.

    The key is ``digest(description, 16)`` of everything that decides the examples, their tokens and the
    reference model; an entry holds sums and token counts, so any reduction derives from it.
    """

    def __init__(self, cache_dir: Path):
        self.root = Path(cache_dir) / "reflogps"

    def path(self, description: Any) -> Path:
        return self.root / f"{digest(description, 16)}.pt"

    def load(self, description: Any, rows: int):
        """The cached [rows, k] tensor, or None when absent or made for another number of rows."""
        import torch

        path = self.path(description)
        if not path.exists():
            return None
        stats = torch.load(path)
        return stats if stats.shape[0] == rows else None

    def save(self, description: Any, stats) -> None:
        import torch

        with atomic_path(self.path(description)) as tmp:
            torch.save(stats, tmp)
