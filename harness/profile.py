"""Where one process's wall time goes, for benchmarks: ``HARNESS_PROFILE=1`` turns it on.

Code marks its phases with ``phase(name)``; the time inside a phase, less the time of phases
nested in it, is that phase's (so a metric write during training counts as ``store``, not
``training``).  With the variable set, the process writes one line to stderr at exit::

    HARNESS_PROFILE {"imported": <unix time>, "exit": <unix time>, "phases": {"store": 0.41, ...}}

``imported`` is when the command's code had been imported (``mark``); a parent that knows when it
launched the process gets start-up + imports as ``imported`` - launch.  Phases: ``store`` (MLflow:
opening or creating the store and every write), ``data`` (loading, filtering, tokenizing and
auditing), ``model`` (loading weights), ``reference`` (reference log-probs and other per-example
inputs), ``training`` (the optimizer loop), ``evaluation`` (eval suites) and ``checkpoint``.
Off (the default), ``phase`` costs one attribute test.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Iterator

ENABLED = os.environ.get("HARNESS_PROFILE", "") not in ("", "0")

_totals: dict[str, float] = {}
_marks: dict[str, float] = {}
_stack: list[list] = []  # [name, seconds of nested phases]


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the time inside the block, less nested phases, as ``name`` (main thread only)."""
    if not ENABLED or threading.current_thread() is not threading.main_thread():
        yield
        return
    start = time.perf_counter()
    _stack.append([name, 0.0])
    try:
        yield
    finally:
        _, nested = _stack.pop()
        elapsed = time.perf_counter() - start
        _totals[name] = _totals.get(name, 0.0) + elapsed - nested
        if _stack:
            _stack[-1][1] += elapsed


def timed(name: str):
    """A decorator form of ``phase``."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with phase(name):
                return fn(*args, **kwargs)

        return inner

    return wrap


def mark(name: str) -> None:
    """Remember the wall-clock time of event ``name`` (the first time only)."""
    if ENABLED:
        _marks.setdefault(name, time.time())


def _report() -> None:
    line = {**_marks, "exit": time.time(), "phases": {k: round(v, 4) for k, v in _totals.items()}}
    print("HARNESS_PROFILE " + json.dumps(line), file=sys.stderr, flush=True)


if ENABLED:
    atexit.register(_report)
