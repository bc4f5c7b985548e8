"""Agreement between two raters over the same items (e.g. the safety judge vs the refusal matcher)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence


def cohens_kappa(rater_a: Sequence[Hashable], rater_b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa (Cohen 1960): κ = (p_o - p_e) / (1 - p_e).

    p_o = the fraction of items both raters label the same;
    p_e = Σ_k p_a(k) · p_b(k), the agreement expected by chance from each rater's own label
          frequencies over the union of labels seen.
    Labels may be any hashable values (e.g. "full_compliance", "full_refusal", "partial_refusal").
    Returns None when κ is undefined: no items, or p_e = 1 (both raters gave one and the same
    label to every item, so chance already explains all agreement).
    """
    if len(rater_a) != len(rater_b):
        raise ValueError(f"cohens_kappa needs one label per item from each rater, got "
                         f"{len(rater_a)} and {len(rater_b)}")
    n = len(rater_a)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(rater_a, rater_b)) / n
    freq_a, freq_b = Counter(rater_a), Counter(rater_b)
    expected = sum(freq_a[label] * freq_b[label] for label in freq_a) / (n * n)
    if expected == 1.0:
        return None
    return (observed - expected) / (1.0 - expected)
