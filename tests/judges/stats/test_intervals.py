"""Student-t intervals of a mean: hand-computed quantiles, nominal coverage, and the t quantile vs scipy.stats."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from judges.stats.intervals import MeanCI, mean_ci_by_category, mean_with_ci, t_interval, t_quantile


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


def test_t_quantile_and_interval_are_scipy_stats_bit_for_bit():
    """stdtrit is what scipy.stats.t.ppf evaluates, so the light path gives the same floats exactly."""
    for q in (0.5, 0.75, 0.95, 0.975, 0.995):
        for df in (1, 2, 3.5, 7, 30, 1000):
            assert t_quantile(q, df) == float(sps.t.ppf(q, df))
    low, high = t_interval(8.0, 2.0, 3)
    half = float(sps.t.ppf(0.975, 2)) * 2.0 / math.sqrt(3)
    assert (low, high) == (8.0 - half, 8.0 + half)
