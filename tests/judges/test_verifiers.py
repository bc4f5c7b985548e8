"""The arith verifier: the last number of an output, normalized, compared exactly."""

import pytest

from judges.verifiers import check_answer, extract_number

TABLE = [
    ("42", "42"),
    ("The answer is 42.", "42"),
    ("What is 17 + 25? The answer is 42", "42"),  # echoed question numbers are decoys
    ("17 + 25 = 42, so 42 apples. Final: 43", "43"),  # the last number wins
    ("-7", "-7"),
    ("x = -7", "-7"),
    ("x=-7", "-7"),
    ("(\u22123)", "-3"),  # unicode minus
    ("3-5", "5"),  # a hyphen between numbers is not a sign
    ("+007", "7"),
    ("1,234", "1234"),
    ("a total of 1,234,567 dollars", "1234567"),
    ("12,34", "34"),  # not a thousands group: two numbers
    ("1,2345", "2345"),
    ("$1,234.50", "1234.5"),
    ("3.0", "3"),
    ("-0.0", "0"),
    ("0.125", "0.125"),
    (".5", "0.5"),
    ("It is 10.", "10"),
    ("version 1.2.3", "1.2"),
    ("no number here", None),
    ("", None),
    ("answer: 5\n", "5"),
]


@pytest.mark.parametrize("text,expected", TABLE)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    "output,answer,correct",
    [
        ("The answer is 42.", "42", True),
        ("The answer is 42.", 42, True),
        ("42 is wrong, it is 41", "42", False),
        ("1,000", 1000, True),
        ("0.50", "0.5", True),
        ("0.5", 0.5, True),
        ("0.1", 0.1, True),  # Fraction("0.1") on both sides: no float rounding
        ("0.30000000000000004", "0.3", False),
        ("-3", "3", False),
        ("3.0", "3", True),
        ("I don't know", "3", False),
    ],
)
def test_check_answer(output, answer, correct):
    assert check_answer(output, answer) is correct


def test_check_answer_rejects_answer_without_number():
    with pytest.raises(ValueError, match="'abc'"):
        check_answer("3", "abc")


@pytest.mark.parametrize("text,number", [("1e5", "100000"), ("the answer is 2.5E-3", "0.0025"), ("-1e-2", "-0.01"),
                                         ("1,000e2", "100000"), ("3 eggs", "3"), ("7e", "7")])
def test_scientific_notation_is_one_number(text, number):
    """Until December 2026 "1e5" read as 5 (its exponent): the last number is the whole mantissa-and-exponent."""
    assert extract_number(text) == number


def test_exponent_alone_is_not_the_answer():
    assert not check_answer("1e5", "5") and check_answer("1e5", 100000)
