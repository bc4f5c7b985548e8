"""Arithmetic primitives of the toy world, shared by every toy dataset builder and the pretraining text.

Every item is one operation ``a+b`` or ``a-b`` on operands 0..99.  Items are
assigned to the train or eval side by a fixed hash of their operand pair
(commuted sums share a side), so eval never overlaps any training data,
whatever the seed.  Pure Python, so data can be built without torch.
"""

from __future__ import annotations

import functools
import hashlib
import random

# Share of operand pairs reserved for evaluation.
EVAL_FRACTION = 0.2

# Difficulty buckets and their weights in training and eval data.  One-digit
# sums are learned almost at once; two-digit sums with carries and two-digit
# differences with borrows are what keep pass@1 away from 100%.
CATEGORY_WEIGHTS = {
    "add-1d1d": 0.10,
    "add-2d1d": 0.25,
    "add-2d2d": 0.35,
    "sub-2d1d": 0.15,
    "sub-2d2d": 0.15,
}


def category(op: str, a: int, b: int) -> str:
    """Difficulty bucket of ``a op b``, e.g. ``add-2d1d``."""
    digits = sorted((len(str(a)), len(str(b))), reverse=True)
    return f"{op}-{digits[0]}d{digits[1]}d"


def all_items() -> list[tuple[str, int, int]]:
    """Every ``(op, a, b)`` in the universe; differences are never negative."""
    items = [("add", a, b) for a in range(100) for b in range(100)]
    items += [("sub", a, b) for a in range(100) for b in range(a + 1)]
    return [it for it in items if category(*it) in CATEGORY_WEIGHTS]


def is_eval_item(op: str, a: int, b: int) -> bool:
    """Fixed train/eval split by operand pair; ``a+b`` and ``b+a`` agree."""
    key = f"{op}:{min(a, b)}:{max(a, b)}" if op == "add" else f"{op}:{a}:{b}"
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < EVAL_FRACTION


def solve(op: str, a: int, b: int) -> int:
    return a + b if op == "add" else a - b


def question(op: str, a: int, b: int) -> str:
    return f"What is {a}{'+' if op == 'add' else '-'}{b}?"


def split_pools(eval_side: bool) -> dict[str, list[tuple[str, int, int]]]:
    """Items of one side of the split, grouped by category (sorted, deterministic).

    Fresh lists on every call, because ``sample_items`` shuffles them in place.
    """
    return {c: list(items) for c, items in _pools(eval_side).items()}


@functools.lru_cache(maxsize=2)
def _pools(eval_side: bool) -> dict[str, tuple[tuple[str, int, int], ...]]:
    # Hashing all ~15k operand pairs takes ~30 ms, and one sweep builds toy data
    # dozens of times (preflight, fingerprints, stages, eval): compute it once.
    pools: dict[str, list[tuple[str, int, int]]] = {c: [] for c in CATEGORY_WEIGHTS}
    for it in all_items():
        if is_eval_item(*it) == eval_side:
            pools[category(*it)].append(it)
    return {c: tuple(items) for c, items in pools.items()}


def sample_items(n: int, rng: random.Random, eval_side: bool, unique: bool) -> list[tuple]:
    """Draw ``n`` items with the category mix of CATEGORY_WEIGHTS.

    With ``unique``, a category never repeats an item; a category whose pool is
    too small gives what it has, and the others fill the gap.
    """
    pools = split_pools(eval_side)
    cats = list(CATEGORY_WEIGHTS)
    if not unique:
        picks = rng.choices(cats, weights=[CATEGORY_WEIGHTS[c] for c in cats], k=n)
        return [rng.choice(pools[c]) for c in picks]
    for pool in pools.values():
        rng.shuffle(pool)
    quota = {c: round(n * CATEGORY_WEIGHTS[c]) for c in cats}
    chosen = [it for c in cats for it in pools[c][: quota[c]]]
    rest = [it for c in cats for it in pools[c][quota[c]:]]
    rng.shuffle(rest)
    chosen += rest[: n - len(chosen)]
    rng.shuffle(chosen)
    return chosen


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def correct_vs(name: str, seed: int, size: int, held_out: bool, rejected) -> list[dict]:
    """Pairs of the correct number against ``rejected(item, rng)`` on ``size`` items.

    Held-out sets come from the eval side of the operand split, each item once.
    """
    rng = random.Random(f"{name}:{seed}")
    items = sample_items(size, rng, eval_side=held_out, unique=held_out)
    return [
        {
            "prompt": user(question(*it)),
            "chosen": assistant(str(solve(*it))),
            "rejected": assistant(rejected(it, rng)),
        }
        for it in items
    ]


# --- pretraining text for the base model (plain text, no chat format) ---

FILLER = ["the cat sat on the mat", "a small dog ran in the park", "we like to count numbers", "the sun is warm today", "she reads a short book", "he writes a long letter", "numbers can be added or taken away", "the answer is a number ."]


def statement(op: str, a: int, b: int, rng: random.Random) -> str:
    """One arithmetic fact in a random plain-text format.

    No "What is ...?" form: measured, it cut SFT pass@1 from ~29% to ~7%.
    """
    r, sym = solve(op, a, b), "+" if op == "add" else "-"
    word = "plus" if op == "add" else "minus"
    forms = [
        f"{a}{sym}{b}={r}",
        f"{a} {sym} {b} = {r}",
        f"{a} {word} {b} is {r}",
        f"{a}{sym}{b}={r}",  # twice: keep the compact form the most common, as calibrated
    ]
    return rng.choice(forms)


def pretrain_lines(n_lines: int, seed: int) -> list[str]:
    """Plain-text documents: a few training-side facts, sometimes with filler.

    Only training-side operand pairs appear, so eval items are never seen.
    """
    rng = random.Random(f"pretrain:{seed}")
    items = sample_items(n_lines * 4, rng, eval_side=False, unique=False)
    lines = []
    for i in range(n_lines):
        parts = [statement(*it, rng) for it in items[4 * i : 4 * i + 4]]
        if rng.random() < 0.3:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(FILLER))
        lines.append(" , ".join(parts) + " .")
    return lines
