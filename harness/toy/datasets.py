"""The toy datasets: their registry (TOY_DATASETS), the arithmetic builders, and content fingerprints.

Rows are in TRL formats and built from the primitives of ``harness.toy.arith``
(items, the fixed train/eval split by operand pair, sampling).  The seed only
changes which items are drawn and their order.  Everything here is pure Python,
so data can be built without torch.
"""

from __future__ import annotations

import hashlib
import json
import random

from harness.errors import HarnessError
from harness.toy.arith import assistant, correct_vs, question, sample_items, solve, user
from harness.toy.code_eval import code_eval_rows
from harness.toy.hedged import BUILDERS as HEDGED_BUILDERS
from harness.toy.judge_data import BUILDERS as JUDGE_BUILDERS

DATA_VERSION = 1

SIZES = {"arith-sft": 6000, "arith-pairs": 3000, "arith-pairs-eval": 1000, "arith-eval": 1000, "arith-prompts": 2000,
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
    "arith-prompts": "prompts with an 'answer' from the training side of the split, for online RL (no overlap "
                     "with arith-eval)",
    # Judging-suite datasets live in harness/toy/judge_data.py (its BUILDERS).
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


def eval_rows(seed: int) -> list[dict]:
    return prompt_rows(seed, "arith-eval", "arith")


def prompt_rows(seed: int, name: str, id_prefix: str) -> list[dict]:
    """Distinct prompts with their ``answer``: ``arith-eval`` on the eval side of the split, ``arith-prompts``
    (for online methods, which train on their own answers to them) on the training side."""
    rng = random.Random(f"{name}:{seed}")
    items = sample_items(SIZES[name], rng, eval_side=name == "arith-eval", unique=True)
    return [
        {"id": f"{id_prefix}-{i:06d}", "prompt": user(question(*it)), "answer": str(solve(*it))}
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
    "arith-prompts": lambda seed: prompt_rows(seed, "arith-prompts", "prompt"),
    "code-eval": code_eval_rows,
    "verbose-pairs": lambda seed: length_pair_rows(seed, verbose_chosen=True),
    "concise-pairs": lambda seed: length_pair_rows(seed, verbose_chosen=False),
    "arith-sft-verbose": verbose_sft_rows,
    **HEDGED_BUILDERS,  # planted-failure data
    **JUDGE_BUILDERS,  # judging-suite data
}


def toy_dataset(name: str, seed: int = 0) -> list[dict]:
    """Rows of toy dataset ``name`` (a key of TOY_DATASETS), deterministic in ``seed``."""
    if name not in _BUILDERS:
        raise HarnessError(f"unknown toy dataset {name!r}; known: {', '.join(TOY_DATASETS)}")
    return _BUILDERS[name](seed)


def dataset_fingerprint(name: str, seed: int = 0) -> str:
    """12-hex hash of the dataset's version, name, seed and full content."""
    blob = json.dumps([DATA_VERSION, name, seed, toy_dataset(name, seed)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
