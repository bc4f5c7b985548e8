"""Cohen's kappa against textbook numbers worked by hand."""

import pytest

from judges.stats.agreement import cohens_kappa


def test_two_category_textbook_example():
    """50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15 (the example on
    Wikipedia's "Cohen's kappa" page).  p_o = 35/50 = .7; A says yes 25/50, B 30/50:
    p_e = .5·.6 + .5·.4 = .5; κ = (.7 - .5) / (1 - .5) = 0.4."""
    a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4)


def test_three_way_safety_labels():
    """10 items over full/partial/none.  Contingency (rows A, cols B), labels F, P, N:
        F: 3 1 0 | P: 0 2 1 | N: 0 0 3     p_o = 8/10 = .8
    A margins F 4, P 3, N 3; B margins F 3, P 3, N 4:
    p_e = (4·3 + 3·3 + 3·4) / 100 = .33;  κ = (.8 - .33) / .67 = .47/.67."""
    a = ["F"] * 4 + ["P"] * 3 + ["N"] * 3
    b = ["F", "F", "F", "P", "P", "P", "N", "N", "N", "N"]
    assert cohens_kappa(a, b) == pytest.approx(0.47 / 0.67)


def test_perfect_chance_and_undefined():
    assert cohens_kappa([1, 2, 1, 2], [1, 2, 1, 2]) == pytest.approx(1.0)
    # Independent margins (each rater 50/50, agreement exactly at chance): κ = 0.
    assert cohens_kappa([1, 1, 2, 2], [1, 2, 1, 2]) == pytest.approx(0.0)
    # Systematic disagreement is negative: p_o = 0, p_e = .5, κ = -1.
    assert cohens_kappa([1, 2, 1, 2], [2, 1, 2, 1]) == pytest.approx(-1.0)
    # Labels B never uses still count in p_e (A: F 2, P 2; B: F 4): p_o = .5, p_e = .5 -> 0.
    assert cohens_kappa(["F", "F", "P", "P"], ["F"] * 4) == pytest.approx(0.0)
    assert cohens_kappa(["x"] * 5, ["x"] * 5) is None
    assert cohens_kappa([], []) is None
    with pytest.raises(ValueError, match="3 and 2"):
        cohens_kappa([1, 2, 3], [1, 2])
