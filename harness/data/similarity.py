"""Text similarity for data quality: word n-gram Jaccard, with MinHash LSH to find candidates.

Two texts are near-duplicates when the Jaccard similarity of their word
n-gram sets (``shingles``) is at least a threshold.  Comparing every pair is
quadratic, so MinHash signatures (Broder 1997) banded into an LSH index
(Leskovec, Rajaraman & Ullman, "Mining of Massive Datasets", ch. 3.4) propose
candidate pairs, and every candidate is then checked with the exact Jaccard:
nothing is flagged that is not really at or above the threshold.  The band
size is chosen so that a pair exactly at the threshold is proposed with
probability >= 1 - 1e-4.  Hash seeds are fixed, so results are deterministic.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

NGRAM = 3
NUM_PERM = 128
MISS_PROBABILITY = 1e-4
_PRIME = (1 << 31) - 1  # Mersenne prime: a * x + b stays below 2**63 for a, b, x < 2**31
_WORD = re.compile(r"\w+|[^\w\s]")

_rng = random.Random(20240611)
_A = np.array([_rng.randrange(1, _PRIME) for _ in range(NUM_PERM)], dtype=np.uint64)
_B = np.array([_rng.randrange(0, _PRIME) for _ in range(NUM_PERM)], dtype=np.uint64)
_FOLD = np.array([_rng.randrange(1, 1 << 63) | 1 for _ in range(8)], dtype=np.uint64)


def words(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks: ``"What is 2+2?"`` -> what, is, 2, +, 2, ?."""
    return _WORD.findall(text.lower())


def shingles(text: str, n: int = NGRAM) -> frozenset[tuple[str, ...]]:
    """The set of word n-grams of ``text``; a text shorter than n is one shingle of all its words."""
    w = words(text)
    if len(w) < n:
        return frozenset([tuple(w)]) if w else frozenset()
    return frozenset(tuple(w[i : i + n]) for i in range(len(w) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@functools.lru_cache(maxsize=1 << 18)
def _shingle_hash(shingle: tuple[str, ...]) -> int:
    digest = hashlib.blake2b("\x1f".join(shingle).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _PRIME


def minhash_many(shingle_sets: list[frozenset]) -> np.ndarray:
    """[N, NUM_PERM] uint64 signatures: row i, column k = min over shingles s of set i of
    (a_k * h(s) + b_k) mod p; an empty set gets p everywhere.  One vectorized pass for all sets."""
    out = np.full((len(shingle_sets), NUM_PERM), _PRIME, dtype=np.uint64)
    sizes = np.array([len(s) for s in shingle_sets], dtype=np.int64)
    if sizes.sum() == 0:
        return out
    x = np.fromiter((_shingle_hash(t) for s in shingle_sets for t in s), dtype=np.uint64, count=int(sizes.sum()))
    values = (_A[:, None] * x[None, :] + _B[:, None]) % _PRIME  # [NUM_PERM, total shingles]
    nonempty = sizes > 0
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])[nonempty]
    out[nonempty] = np.minimum.reduceat(values, starts, axis=1).T
    return out


def minhash(shingle_set: frozenset) -> np.ndarray:
    """[NUM_PERM] signature of one set (see ``minhash_many``)."""
    return minhash_many([shingle_set])[0]


def band_rows(threshold: float) -> int:
    """Rows per LSH band: the largest r in 8, 4, 2, 1 for which a pair at ``threshold`` is missed
    with probability (1 - t^r)^(NUM_PERM / r) <= MISS_PROBABILITY."""
    for r in (8, 4, 2):
        if (1 - threshold**r) ** (NUM_PERM // r) <= MISS_PROBABILITY:
            return r
    return 1


class NearIndex:
    """An LSH index over shingle sets; ``matches`` returns indexed items at Jaccard >= threshold."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.rows = band_rows(threshold)
        self.buckets: dict[int, list[int]] = defaultdict(list)
        self.sets: list[frozenset] = []

    def keys(self, shingle_set: frozenset) -> list[int]:
        """The LSH bucket keys of one set (see ``keys_many``)."""
        return self.keys_many([shingle_set])[0]

    def keys_many(self, shingle_sets: list[frozenset]) -> list[list[int]]:
        """One bucket key per LSH band and set: the band's r signature values folded into one integer.

        Folding may merge two buckets (a spurious candidate, then rejected by the
        exact Jaccard check), never split one.
        """
        if not shingle_sets:
            return []
        signatures = minhash_many(shingle_sets).reshape(len(shingle_sets), -1, self.rows)
        folded = (signatures * _FOLD[: self.rows]).sum(axis=2)  # uint64 arithmetic wraps: a hash
        return [[(band << 64) | v for band, v in enumerate(row)] for row in folded.tolist()]

    def add(self, shingle_set: frozenset, keys: list[int] | None = None) -> int:
        """Index one set (``keys`` from ``keys()`` if already computed); returns its position."""
        position = len(self.sets)
        self.sets.append(shingle_set)
        for key in keys if keys is not None else self.keys(shingle_set):
            self.buckets[key].append(position)
        return position

    def matches(self, shingle_set: frozenset, keys: list[int] | None = None) -> list[tuple[int, float]]:
        """``(position, jaccard)`` of indexed sets at or above the threshold, by position."""
        keys = keys if keys is not None else self.keys(shingle_set)
        candidates = {p for key in keys for p in self.buckets.get(key, ())}
        scored = ((p, jaccard(shingle_set, self.sets[p])) for p in sorted(candidates))
        return [(p, s) for p, s in scored if s >= self.threshold]


def near_duplicate_positions(texts: Iterable[str], threshold: float) -> list[int]:
    """Positions of texts that are near-duplicates of an earlier *kept* text (keep the first).

    A text is compared with the texts kept so far, so a chain a ~ b ~ c with
    a !~ c drops b and keeps c.
    """
    index, dropped = NearIndex(threshold), []
    sets = [shingles(t) for t in texts]
    for position, (s, keys) in enumerate(zip(sets, index.keys_many(sets))):
        if index.matches(s, keys):
            dropped.append(position)
        else:
            index.add(s, keys)
    return dropped
