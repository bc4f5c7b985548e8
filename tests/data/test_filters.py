"""data.filter: identical pairs, exact and near duplicates and length bounds are dropped and counted."""

from __future__ import annotations

from harness.config.spec import FilterSpec
from harness.data.filters import (
    drop_exact_duplicates,
    drop_identical_pairs,
    drop_near_duplicates,
    filter_rows,
    within_length,
)
from harness.data.load import Row
from harness.data.tokenization import Encoded, EncodedPair


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
    kto = [Row("k.jsonl", i + 1, {"prompt": "p", "completion": "a", "label": label})
           for i, label in enumerate([True, False, True])]
    kept, dropped = drop_exact_duplicates(kto)
    assert [r.line for r in kept] == [1, 2] and dropped == 1  # opposite labels are not duplicates


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
    kept, counts = filter_rows(rows, FilterSpec(dedup="near"), "pairs")
    assert [r.line for r in kept] == [2]
    assert counts == {"data/filtered_identical_pairs": 1, "data/filtered_near_duplicates": 1}


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
         "lima", "mike"]


def test_near_duplicates_at_the_threshold_are_dropped():
    """Eleven distinct words give 9 trigrams; changing the last word keeps 8 of them and adds 1:
    Jaccard = 8 / (9 + 1) = 0.8 exactly, so the copy goes at threshold 0.8 and stays at 0.81."""
    from harness.data.similarity import jaccard, shingles

    base = " ".join(WORDS[:11])
    edited = " ".join(WORDS[:10] + ["zulu"])
    assert jaccard(shingles(base), shingles(edited)) == 0.8
    other = " ".join(reversed(WORDS))
    rows = [Row("f.jsonl", i + 1, {"text": t}) for i, t in enumerate([base, other, edited, base])]
    kept, dropped = drop_near_duplicates(rows, 0.8)
    assert [r.line for r in kept] == [1, 2] and dropped == 2
    kept, dropped = drop_near_duplicates(rows, 0.81)
    assert [r.line for r in kept] == [1, 2, 3] and dropped == 1  # the exact copy still goes


def test_near_dedup_keeps_the_first_and_compares_with_kept_rows_only():
    """21 words = 19 trigrams.  b changes a's last word, c also b's first:
    J(a, b) = J(b, c) = 18/20 = 0.9 but J(a, c) = 17/21 < 0.85, so at 0.85 b goes and c stays."""
    from harness.data.similarity import jaccard, shingles

    a = [f"w{i}" for i in range(21)]
    b = a[:-1] + ["zulu"]
    c = ["yankee"] + b[1:]
    a, b, c = (" ".join(x) for x in (a, b, c))
    assert jaccard(shingles(a), shingles(b)) == jaccard(shingles(b), shingles(c)) == 0.9
    assert jaccard(shingles(a), shingles(c)) == 17 / 21
    rows = [Row("f.jsonl", i + 1, {"text": t}) for i, t in enumerate([a, b, c])]
    kept, dropped = drop_near_duplicates(rows, 0.85)
    assert [r.line for r in kept] == [1, 3] and dropped == 1


def test_near_dedup_agrees_with_brute_force_on_toy_data():
    """MinHash LSH only proposes candidates; the result equals an all-pairs exact-Jaccard scan."""
    from harness.data.filters import row_text
    from harness.data.load import load_rows
    from harness.data.similarity import jaccard, shingles

    rows = load_rows("toy://arith-pairs", "pairs")[:300]
    sets = [shingles(row_text(r.data)) for r in rows]
    expected, kept = [], []
    for i, s in enumerate(sets):
        if any(jaccard(s, sets[j]) >= 0.7 for j in kept):
            expected.append(i)
        else:
            kept.append(i)
    kept_rows, dropped = drop_near_duplicates(rows, 0.7)
    assert dropped == len(expected) > 0
    assert [r.line for r in kept_rows] == [rows[i].line for i in kept]


def test_row_text_joins_prompt_and_responses():
    from harness.data.filters import row_text

    msg = [{"role": "user", "content": "hi"}]
    assert row_text({"prompt": msg, "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]}) == "hi\na\nb"
    assert row_text({"text": "t", "weight": 1}) == "t"
