"""pass@k against the closed form with exact integer binomials."""

import math
from fractions import Fraction

import numpy as np
import pytest

from judges.stats.pass_at_k import mean_pass_at_k, pass_at_k


def _closed_form(n, c, k):
    """Chen et al. 2021, Eq. 1: 1 - C(n-c, k) / C(n, k), exact in rationals (math.comb(a, k) = 0 for a < k)."""
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


GRID = [(n, c, k) for n in (1, 2, 5, 10, 20) for c in range(n + 1) for k in range(1, n + 1)]
GRID += [(200, c, k) for c in (0, 1, 3, 17, 100, 180, 199, 200) for k in (1, 2, 10, 50, 100, 150, 200)]


def test_pass_at_k_matches_closed_form():
    """Every (n, c, k) of the grid, including n = 200 where C(200, 100) ~ 9e58."""
    for n, c, k in GRID:
        assert pass_at_k(n, c, k) == pytest.approx(_closed_form(n, c, k), rel=1e-12, abs=1e-13), (n, c, k)


def test_pass_at_k_hand_values():
    """n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 1/2.  k=1 is the plain rate c/n."""
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_pass_at_k_edge_cases_are_exact():
    assert pass_at_k(200, 0, 200) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 5, 6) == 1.0  # n - c = 5 < k: every 6-subset has a correct one
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0


@pytest.mark.parametrize("n,c,k,match", [(5, 1, 0, "k"), (5, 1, 6, "k"), (5, -1, 1, "c"), (5, 6, 1, "c")])
def test_pass_at_k_rejects_invalid(n, c, k, match):
    with pytest.raises(ValueError, match=match):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_vs_numpy():
    items = [(10, 0), (10, 3), (10, 10), (10, 7), (10, 1)]
    values = np.array([_closed_form(n, c, 4) for n, c in items])
    mean, se = mean_pass_at_k(items, 4)
    assert mean == pytest.approx(values.mean())
    assert se == pytest.approx(values.std(ddof=1) / np.sqrt(len(values)))


def test_mean_pass_at_1_single_sample_is_binomial_se():
    """n = k = 1: values are 0/1 with rate p, and s^2 = m p (1-p) / (m-1), so SE = sqrt(p(1-p)/(m-1)).

    m = 5 with 2 correct: p = 0.4, SE = sqrt(0.24 / 4).
    """
    mean, se = mean_pass_at_k([(1, 1), (1, 0), (1, 1), (1, 0), (1, 0)], 1)
    assert mean == pytest.approx(0.4)
    assert se == pytest.approx(math.sqrt(0.24 / 4))


def test_mean_pass_at_k_single_item_and_empty():
    mean, se = mean_pass_at_k([(8, 2)], 1)
    assert mean == pytest.approx(0.25) and math.isnan(se)  # one item: the SE is undefined, not 0
    with pytest.raises(ValueError, match="at least one"):
        mean_pass_at_k([], 1)
