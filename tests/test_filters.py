"""data.filter: identical pairs, exact duplicates and length bounds are dropped and counted."""

from __future__ import annotations

import pytest

from harness.data import Row
from harness.errors import HarnessError
from harness.filters import drop_exact_duplicates, drop_identical_pairs, filter_rows, within_length
from harness.spec import FilterSpec
from harness.tokenization import Encoded, EncodedPair


def _pair(i, chosen, rejected, prompt="p"):
    return Row("f.jsonl", i, {"prompt": prompt, "chosen": chosen, "rejected": rejected})


def test_identical_pairs_are_dropped_and_counted():
    rows = [_pair(1, "a", "b"), _pair(2, "a", "a"), _pair(3, [{"role": "assistant", "content": "x"}],
                                                         [{"role": "assistant", "content": "x"}])]
    kept, dropped = drop_identical_pairs(rows)
    assert [r.line for r in kept] == [1] and dropped == 2


def test_exact_duplicates_keep_the_first():
    rows = [_pair(1, "a", "b"), _pair(2, "a", "b"), _pair(3, "a", "b", prompt="q"), _pair(4, "a", "b")]
    kept, dropped = drop_exact_duplicates(rows)
    assert [r.line for r in kept] == [1, 3] and dropped == 2


def test_length_bounds_apply_to_every_response():
    examples = [Encoded([1], [2] * n) for n in (1, 3, 5)] + [EncodedPair([1], [2] * 3, [2] * 9)]
    kept, dropped = within_length(examples, 2, 5)
    assert [len(e.response_ids) for e in kept] == [3, 5] and dropped == 2
    assert within_length(examples, None, None) == (examples, 0)


def test_filter_rows_follows_the_spec():
    rows = [_pair(1, "a", "a"), _pair(2, "a", "b"), _pair(3, "a", "b")]
    kept, counts = filter_rows(rows, FilterSpec(dedup="exact"), "pairs")
    assert [r.line for r in kept] == [2]
    assert counts == {"data/filtered_identical_pairs": 1, "data/filtered_duplicates": 1}
    kept, counts = filter_rows(rows, FilterSpec(drop_identical_pairs=False), "pairs")
    assert len(kept) == 3 and counts == {}
    with pytest.raises(HarnessError, match="near"):
        filter_rows(rows, FilterSpec(dedup="near"), "pairs")
