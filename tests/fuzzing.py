"""Shared pieces of the fuzz tests (issue 17's fault campaign): settings, value strategies, the error check.

Every fuzz test states one property: an input either works, or raises the project's
user error (``HarnessError``) whose first line names the file (and row or key) to fix.
Any other exception fails the test with its traceback, which is the point.

Size: ``FUZZ_EXAMPLES`` cases per test in ``make test`` (derandomized, so the fast suite
is repeatable); ``HARNESS_FUZZ_EXAMPLES=N`` runs N fresh random cases per test instead,
e.g. ``HARNESS_FUZZ_EXAMPLES=2000 pytest -q tests -k fuzz --hypothesis-show-statistics``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from harness.errors import HarnessError

_ASKED = int(os.environ.get("HARNESS_FUZZ_EXAMPLES") or 0)


def fuzz_settings(examples: int):
    """``examples`` cases (or ``HARNESS_FUZZ_EXAMPLES``), no deadline, no example database."""
    return settings(max_examples=_ASKED or examples, deadline=None, derandomize=not _ASKED, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


# Text a user's file may hold: any unicode (no surrogates: not encodable), with the characters
# that break naive code (newlines, quotes, braces of templates, verdict-like brackets) more often.
TRICKY = st.sampled_from(["", " ", "\n", "\t", "\r\n", '"', "'", "{{", "}}", "{%", "[[", "]]", "\\", "\x00",
                          "\u2028", "<|im_end|>", "<|im_start|>", "é", "😀", "\ufeff"])
TEXT = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
                 st.lists(TRICKY, max_size=4).map("".join))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                   st.floats(allow_nan=True, allow_infinity=True), TEXT)


def json_values(leaves=SCALAR, max_leaves: int = 8):
    """Nested JSON-like values: scalars, lists and string-keyed mappings."""
    return st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(TEXT, inner, max_size=3)),
                        max_leaves=max_leaves)


def assert_user_error(exc: BaseException, *names: str) -> None:
    """``exc`` is a HarnessError whose message's first line names one of ``names`` (a file, key or path)."""
    if not isinstance(exc, HarnessError):
        raise AssertionError(f"not a user error: {type(exc).__name__}: {exc}") from exc  # noqa: TRY004 - a test failure
    first = str(exc).splitlines()[0] if str(exc) else ""
    assert any(n in first for n in names), f"the error names none of {names}: {first!r}"
