"""Lines for the user on stderr, written so that an active progress bar is not torn."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def say(message: str) -> None:
    """One line on stderr (stdout stays for results, e.g. ``--format json``)."""
    tqdm.write(message, file=sys.stderr)
