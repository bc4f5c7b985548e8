"""Synthetic arithmetic data for the toy world, in TRL row formats.

Every item is one operation ``a+b`` or ``a-b`` on operands 0..99.  Items are
assigned to the train or eval side by a fixed hash of their operand pair
(commuted sums share a side), so eval never overlaps any training data,
whatever the seed.  The seed only changes which items are drawn and their
order.  Everything here is pure Python, so data can be built without torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random

from harness.toy.code_eval import code_eval_rows

DATA_VERSION = 1

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

SIZES = {"arith-sft": 6000, "arith-pairs": 3000, "arith-pairs-eval": 1000, "arith-eval": 1000,
         "verbose-pairs": 3000, "arith-sft-verbose": 3000}

# Share of arith-sft-verbose answers in the padded-verbose style.  Below one
# half, so greedy decoding after SFT on it stays concise while the verbose
# style is a path the model knows (the base model has never seen its words).
VERBOSE_SFT_RATE = 0.2

TOY_DATASETS = {
    "arith-sft": "user asks 'What is a+b?' or 'a-b', assistant answers with the number",
    "arith-pairs": "same prompts; chosen = correct number, rejected = plausible wrong one",
    "arith-pairs-eval": "arith-pairs built on the eval side of the split: held-out pairs (data.eval) for rm/dpo",
    "arith-eval": "held-out prompts (disjoint operand pairs) with an 'answer' for the verifier",
    # Judging-suite datasets live in harness/toy/judge_data.py (JUDGE_DATASETS there).
    "safety-eval": "harmful (refuse) and benign-but-sensitive (answer) prompts with a 'label'",
    "safety-pairs": "pairs: chosen refuses a harmful prompt / answers a benign one",
    "chat-eval": "two-turn arithmetic chats (turns, reference) for mtbench-style judging",
    "code-eval": "30 small Python function tasks with HumanEval-style tests, for the code suite",
    "verbose-pairs": "same prompts; both answers correct; chosen = padded-verbose, rejected = concise",
    "concise-pairs": "toy://verbose-pairs with chosen and rejected swapped: the concise answer is chosen",
    "arith-sft-verbose": "SFT rows; 20% of answers padded-verbose (the verbose-pairs style), the rest the number",
    # Planted-failure datasets for preference methods live in harness/toy/hedged.py.
    "arith-sft-hedged": "arith-sft; 75% of sums end in a hedge: '42, I am 90% sure.'",
    "arith-pairs-hedged": "pairs: chosen = the correct number, rejected = it plus that hedge",
    "arith-pairs-hedged-eval": "arith-pairs-hedged on the eval side of the split: held-out pairs for rm stages",
}

# Padded-verbose answers: filler around the result, which is always the last
# number of the text, so the arith verifier scores them correct.
VERBOSE_TEMPLATES = (
    ("Let me think about this carefully. The question asks for {a}{sym}{b}. Working it out step by step, "
     "the answer is {r}."),
    ("Good question! To find {a}{sym}{b}, I {verb} the two numbers with care, and after checking my work "
     "twice I am confident that the result is {r}."),
    ("Sure, happy to help with that. {a}{sym}{b} is a simple calculation once we {verb} the numbers, "
     "so the final answer comes out to {r}."),
)


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


def wrong_answer(op: str, a: int, b: int, rng: random.Random) -> int:
    """A plausible wrong result: the right one with a units-digit slip of 1-3.

    Why units only: a half-trained toy model mostly gets the leading digits right
    and slips on the last one, so these pairs look like its own mistakes.  The
    two answers then share every token but one, which keeps DPO's signal on the
    digit that matters instead of on the length or the end-of-turn token.
    """
    right = solve(op, a, b)
    units = right % 10
    slip = rng.choice([d for d in (-3, -2, -1, 1, 2, 3) if 0 <= units + d <= 9])
    return right + slip


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def sft_rows(seed: int) -> list[dict]:
    rng = random.Random(f"arith-sft:{seed}")
    items = sample_items(SIZES["arith-sft"], rng, eval_side=False, unique=False)
    return [{"messages": user(question(*it)) + assistant(str(solve(*it)))} for it in items]


def pair_rows(seed: int, name: str = "arith-pairs") -> list[dict]:
    """Correctness pairs; ``arith-pairs`` on the training side, ``arith-pairs-eval`` on the eval side.

    The eval-side set is for held-out validation (``data.eval``): its operand
    pairs are those of toy://arith-eval, never of any training row, and each
    item occurs once.  Training a policy on it would leak arith-eval.
    """
    return correct_vs(name, seed, SIZES[name], name == "arith-pairs-eval",
                      lambda it, rng: str(wrong_answer(*it, rng)))


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


def eval_rows(seed: int) -> list[dict]:
    rng = random.Random(f"arith-eval:{seed}")
    items = sample_items(SIZES["arith-eval"], rng, eval_side=True, unique=True)
    return [
        {"id": f"arith-{i:06d}", "prompt": user(question(*it)), "answer": str(solve(*it))}
        for i, it in enumerate(items)
    ]


def verbose_answer(op: str, a: int, b: int, rng: random.Random) -> str:
    """A correct answer padded with filler; its last number is the result."""
    template = rng.choice(VERBOSE_TEMPLATES)
    sym, verb = ("+", "add") if op == "add" else ("-", "subtract")
    return template.format(a=a, b=b, sym=sym, verb=verb, r=solve(op, a, b))


def length_pair_rows(seed: int, verbose_chosen: bool) -> list[dict]:
    """Pairs of two correct answers, one concise (the number, as in arith-sft) and one padded-verbose.

    ``verbose-pairs`` and ``concise-pairs`` hold the same items and texts, with
    chosen and rejected swapped; items come from the training side of the split.
    """
    rng = random.Random(f"verbose-pairs:{seed}")
    items = sample_items(SIZES["verbose-pairs"], rng, eval_side=False, unique=False)
    rows = []
    for it in items:
        concise, verbose = str(solve(*it)), verbose_answer(*it, rng)
        chosen, rejected = (verbose, concise) if verbose_chosen else (concise, verbose)
        rows.append({"prompt": user(question(*it)), "chosen": assistant(chosen), "rejected": assistant(rejected)})
    return rows


def verbose_sft_rows(seed: int) -> list[dict]:
    """SFT rows teaching both answer styles: VERBOSE_SFT_RATE of them padded-verbose, the rest concise."""
    rng = random.Random(f"arith-sft-verbose:{seed}")
    items = sample_items(SIZES["arith-sft-verbose"], rng, eval_side=False, unique=False)
    rows = []
    for it in items:
        answer = verbose_answer(*it, rng) if rng.random() < VERBOSE_SFT_RATE else str(solve(*it))
        rows.append({"messages": user(question(*it)) + assistant(answer)})
    return rows


_BUILDERS = {
    "arith-sft": sft_rows,
    "arith-pairs": pair_rows,
    "arith-pairs-eval": lambda seed: pair_rows(seed, "arith-pairs-eval"),
    "arith-eval": eval_rows,
    "code-eval": code_eval_rows,
    "verbose-pairs": lambda seed: length_pair_rows(seed, verbose_chosen=True),
    "concise-pairs": lambda seed: length_pair_rows(seed, verbose_chosen=False),
    "arith-sft-verbose": verbose_sft_rows,
}


def toy_dataset(name: str, seed: int = 0) -> list[dict]:
    """Rows of toy dataset ``name`` (a key of TOY_DATASETS), deterministic in ``seed``."""
    from harness.toy.hedged import BUILDERS as HEDGED_BUILDERS  # planted-failure data
    from harness.toy.judge_data import BUILDERS as JUDGE_BUILDERS  # judging-suite data

    if name in JUDGE_BUILDERS:
        return JUDGE_BUILDERS[name](seed)
    if name in HEDGED_BUILDERS:
        return HEDGED_BUILDERS[name](seed)
    if name not in _BUILDERS:
        from harness.errors import HarnessError

        raise HarnessError(f"unknown toy dataset {name!r}; known: {', '.join(TOY_DATASETS)}")
    return _BUILDERS[name](seed)


def dataset_fingerprint(name: str, seed: int = 0) -> str:
    """12-hex hash of the dataset's version, name, seed and full content."""
    blob = json.dumps([DATA_VERSION, name, seed, toy_dataset(name, seed)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


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
