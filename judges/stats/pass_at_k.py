"""Unbiased pass@k for verifier suites (arith, code): per item, and its mean over items with its SE."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from n samples of which c are correct.

    pass@k = 1 - C(n - c, k) / C(n, k)   (Chen et al. 2021, "Evaluating Large
    Language Models Trained on Code", Eq. 1): the probability that a random
    size-k subset of the n samples holds at least one correct one.

    The ratio is computed as the product prod_{i = n-c+1}^{n} (1 - k / i),
    which never forms the (huge) binomials.  Exact edge cases: c = 0 gives
    0.0, and n - c < k (every k-subset holds a correct sample) gives 1.0.

    Raises ValueError unless 1 <= k <= n and 0 <= c <= n.
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got n={n}, k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n (correct samples), got n={n}, c={c}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (i - k) / i.
    failure = 1.0
    for i in range(n - c + 1, n + 1):
        failure *= 1.0 - k / i
    return 1.0 - failure


def mean_pass_at_k(per_item: Sequence[tuple[int, int]], k: int) -> tuple[float, float]:
    """Mean pass@k over items and its standard error.

    Args:
        per_item: one (n, c) per item: samples drawn and samples correct.
        k: as in ``pass_at_k``; every item needs n >= k.
    Returns:
        (mean, standard_error) with standard_error = s / sqrt(m), s the sample
        standard deviation (ddof = 1) of the m per-item estimates; NaN when m = 1
        (one item has no spread to estimate it from; until December 2026 this read 0.0,
        a standard error of a certain value).

    This SE covers only the sampling of items (the items' own estimates are
    treated as fixed).  For n = k = 1 the estimates are 0/1 and it reduces to
    sqrt(p (1 - p) / (m - 1)), p the pass rate: the binomial SE with the m - 1
    of the unbiased variance rather than sqrt(p (1 - p) / m).
    """
    if not per_item:
        raise ValueError("mean_pass_at_k needs at least one item, got none")
    values = [pass_at_k(n, c, k) for n, c in per_item]
    m = len(values)
    mean = math.fsum(values) / m
    if m == 1:
        return mean, math.nan
    variance = math.fsum((v - mean) ** 2 for v in values) / (m - 1)
    return mean, math.sqrt(variance / m)
