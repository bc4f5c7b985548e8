"""pass@k against the closed form with exact integer binomials."""

import math
from fractions import Fraction

import numpy as np
import pytest

from judges.stats.estimators import MeanCI, mean_ci_by_category, mean_pass_at_k, mean_with_ci, pass_at_k


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
    assert mean_pass_at_k([(8, 2)], 1) == (pytest.approx(0.25), 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mean_pass_at_k([], 1)


def test_mean_with_ci_hand_computed():
    """Scores 6, 8, 10: mean 8, s = 2, SE = 2/sqrt(3); t_{0.975, 2} = 4.302652729911275
    (tables: 4.303), so the 95% interval is 8 ± 4.3027 · 1.1547 = 8 ± 4.9683."""
    ci = mean_with_ci([6.0, 8.0, 10.0])
    half = 4.302652729911275 * 2 / math.sqrt(3)
    assert (ci.n, ci.mean) == (3, pytest.approx(8.0))
    assert ci.low == pytest.approx(8 - half, rel=1e-9) and ci.high == pytest.approx(8 + half, rel=1e-9)
    assert mean_with_ci([7.0]) == MeanCI(1, 7.0, None, None)
    with pytest.raises(ValueError, match="at least one"):
        mean_with_ci([])


def test_t_interval_covers_at_nominal_rate():
    """Normal samples of size 5: the 90% t-interval covers the true mean ~90% of 2000 draws
    (binomial SE of the rate = sqrt(.9·.1/2000) ≈ .0067; tolerance 4 SE)."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        ci = mean_with_ci(list(rng.normal(3.0, 2.0, size=5)), confidence=0.9)
        hits += ci.low <= 3.0 <= ci.high
    assert abs(hits / 2000 - 0.9) < 4 * math.sqrt(0.09 / 2000)


def test_mean_ci_by_category_groups_in_order():
    by_cat = mean_ci_by_category([("math", 2), ("writing", 9), ("math", 4), ("writing", 7)])
    assert list(by_cat) == ["math", "writing"]
    assert by_cat["math"].mean == pytest.approx(3.0) and by_cat["writing"].mean == pytest.approx(8.0)
    # math: 2, 4 -> s = sqrt(2), SE = 1, t_{0.975, 1} = 12.706204736174707: width 2 · 12.706.
    assert by_cat["math"].high - by_cat["math"].low == pytest.approx(2 * 12.706204736174707, rel=1e-9)
