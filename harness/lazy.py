"""Functions imported at their first call.

A command imports only what it runs (`harness judge` on output files never loads torch or transformers;
issue 15's start-up rule).  Where a module offers a path that needs heavy code (generating with a model,
loading a tokenizer) next to paths that do not, it names that code with ``lazy("package.module:function")``
at module level: the name reads and is patched like an import, and the module is imported when the
function is first called.  The same idea as ``harness.cli.COMMANDS`` and the method registry's
``loss_ref``; the dependency between the modules is unchanged, only the time of the import moves.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any


def lazy(ref: str) -> Callable[..., Any]:
    """The function ``ref`` ("package.module:function"), imported when first called."""
    module, name = ref.split(":")

    @functools.cache
    def target() -> Callable[..., Any]:
        return getattr(importlib.import_module(module), name)

    def call(*args, **kwargs):
        return target()(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{ref}, imported at its first call (harness.lazy)."
    return call
