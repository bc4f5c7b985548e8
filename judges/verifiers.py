"""Numeric answer verification: take the last number of a model's output and compare it exactly.

The rule is deliberately simple and predictable: the *last* number in the
output is the answer.  Numbers echoed earlier (from the question, or from
working) never count, whatever their form.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

# A sign counts only when it does not join two words or numbers ("3-5" is 3 and 5,
# "x-1" is 1).  Thousands separators must come in complete groups of three
# ("1,234,567"; "12,34" is two numbers).  A number never starts right after a
# digit or a dot, so "1.2.3" is 1.2, not 1.2 and .3.  Scientific notation is one
# number ("1e5" is 100000, "2.5E-3" is 0.0025), never its exponent alone (which
# read "1e5" as 5); the exponent is capped at three digits to bound the text.
_NUMBER = re.compile(
    r"""
    (?:(?<![\w.])(?P<sign>[-+\u2212]))?
    (?<![\d.])
    (?P<body>
        (?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?
      | \.\d+
    )
    (?:[eE](?P<exp>[-+]?\d{1,3})(?!\d))?
    """,
    re.VERBOSE,
)


def _normalize(sign: str | None, body: str, exponent: str | None = None) -> str:
    """Canonical text of a number: no commas, no '+', no exponent, no leading/trailing zeros, no '-0'."""
    body = body.replace(",", "")
    if exponent is not None:
        body = format(Decimal(body).scaleb(int(exponent)), "f")
    integer, _, fraction = body.partition(".")
    integer = integer.lstrip("0") or "0"
    fraction = fraction.rstrip("0")
    text = f"{integer}.{fraction}" if fraction else integer
    negative = sign in ("-", "\u2212") and text != "0"
    return f"-{text}" if negative else text


def extract_number(text: str) -> str | None:
    """The last number in ``text``, normalized; None if there is none.

    Handles integers, signs, decimals and thousands separators:
    "so 1,234.50 apples" -> "1234.5", "+007" -> "7", "-3.0" -> "-3", ".5" -> "0.5",
    "1e5" -> "100000", "2.5E-3" -> "0.0025".
    """
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    return _normalize(last.group("sign"), last.group("body"), last.group("exp"))


def check_answer(output: str, answer: str | float) -> bool:
    """Whether the last number of ``output`` equals ``answer`` exactly.

    Both sides are normalized by ``extract_number`` and compared as
    ``fractions.Fraction``, so "0.50" equals "0.5" and "1,000" equals 1000
    with no float rounding.  An output without a number is wrong.  An answer
    without a number is a data error (ValueError naming the answer).
    """
    if isinstance(answer, float):
        expected = Fraction(str(answer))  # str() is the shortest exact repr, "1e+16" included
    else:
        text = extract_number(str(answer))
        if text is None:
            raise ValueError(f"answer {answer!r} contains no number to check against")
        expected = Fraction(text)
    got = extract_number(output)
    return got is not None and Fraction(got) == expected


def verify_arith(output: str, item: dict) -> bool:
    """The arith verifier on one prompt row: its ``answer`` against the output's last number."""
    return check_answer(output, item["answer"])


def check_arith_row(item: dict) -> None:
    """Raise KeyError or ValueError when the arith verifier cannot check ``item`` (no answer, or no number in it)."""
    check_answer("", item["answer"])


def verify_code(output: str, item: dict) -> bool:
    """The code verifier: the output's program and the row's ``tests`` (and ``entry_point``) pass in the sandbox."""
    from judges.code import verify  # the sandbox's modules load only when code is verified

    return verify(output, item).passed


def check_code_row(item: dict) -> None:
    """Raise when ``item`` has no ``tests`` source to run (``entry_point``, when present, must be a name)."""
    if not isinstance(item.get("tests"), str) or not item["tests"].strip():
        raise KeyError("tests")
    if item.get("entry_point") is not None and not str(item["entry_point"]).isidentifier():
        raise ValueError(f"entry_point {item['entry_point']!r} is not a Python name")


class Verifier(NamedTuple):
    """``verify(output, row)``: whether the output is correct.  ``check_row(row)`` raises KeyError (a missing
    field) or ValueError when the row cannot be verified, before anything runs.  ``sandboxed``: it runs code."""

    verify: Callable[[str, dict], bool]
    check_row: Callable[[dict], None]
    sandboxed: bool = False


# Verifiers by name, for reward sources (``method.reward: {verifier: NAME}``).
VERIFIERS = {"arith": Verifier(verify_arith, check_arith_row),
             "code": Verifier(verify_code, check_code_row, sandboxed=True)}
