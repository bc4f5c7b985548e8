"""User-facing errors.

A ``HarnessError`` carries a message that names what to fix (file, line, key,
value seen).  The CLI prints it as one line and exits non-zero; anything else
is a bug and shows a traceback only with ``--debug``.
"""


class HarnessError(Exception):
    """An error caused by the user's input, with a message that says what to fix."""


class SpecError(HarnessError):
    """An invalid experiment spec or override."""


class DataError(HarnessError):
    """An invalid data file or row."""


class NonFiniteError(HarnessError):
    """Training produced a NaN or infinite loss or gradient; the message names the step."""
