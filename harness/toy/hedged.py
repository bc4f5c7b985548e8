"""Toy datasets with a planted, learnable failure mode that preference pairs target.

``toy://arith-sft-hedged`` is arith-sft in which most addition answers carry a
hedge that ends in a number: "42, I am 90% sure."  The arith verifier scores
the *last* number of an output (90 here), so a hedged answer is wrong even when
its result is right.  SFT on it learns the habit (greedy decoding hedges on
addition prompts, because most of their training answers do) on top of the
arithmetic, which every row still teaches.

``toy://arith-pairs-hedged`` holds correctness pairs aimed at exactly that
failure: chosen is the plain correct number, rejected is the same number
followed by the hedge.  The two share every token up to the hedge, and the
hedge is a fixed phrase, so a preference method only has to learn to end the
answer after the number: a decision the model can represent, unlike which
digit is right.  A first version hedged to an off-by-one number ("42, or
maybe 43"); DPO then pushed down near-correct digits and wrecked the model's
arithmetic (pass@1 0.093 -> 0.007 at lr 1e-4, measured), so the hedge now
carries no answer-like digits.

Why this exists: on plain arith-sft/arith-pairs a 0.85M-parameter model's
errors are capacity errors (wrong digits); preference pairs cannot teach it
the right digit, and DPO there lowered pass@1 (README quickstart).

Items come from the training side of the fixed operand-pair split
(``arith.is_eval_item``), so toy://arith-eval stays disjoint.
``toy://arith-pairs-hedged-eval`` is the one exception: the same pairs drawn
(without repeats) from the eval side, held-out pairs for ``data.eval`` of an
``rm`` stage (experiments/rm-hedged.yaml); never train a policy on it.
"""

from __future__ import annotations

import random

from harness.toy.arith import assistant, correct_vs, question, sample_items, solve, user

# Share of addition answers in arith-sft-hedged that carry the hedge.  Above
# one half, so greedy decoding after SFT hedges on addition prompts.
HEDGE_RATE = 0.75

# Operation whose answers get hedged: recognizable from the prompt ("+").
HEDGED_OP = "add"

# The hedge: a fixed phrase; its 90 is the last number of the output, so the answer
# is scored wrong (unless the result is 90 itself).
HEDGE = ", I am 90% sure."

SIZES = {"arith-sft-hedged": 6000, "arith-pairs-hedged": 3000, "arith-pairs-hedged-eval": 1000}


def hedged_answer(op: str, a: int, b: int) -> str:
    """The correct result followed by the hedge, e.g. "42, I am 90% sure." (90 is read as the answer)."""
    return f"{solve(op, a, b)}{HEDGE}"


def hedged_sft_rows(seed: int) -> list[dict]:
    rng = random.Random(f"arith-sft-hedged:{seed}")
    items = sample_items(SIZES["arith-sft-hedged"], rng, eval_side=False, unique=False)
    rows = []
    for it in items:
        hedge = it[0] == HEDGED_OP and rng.random() < HEDGE_RATE
        answer = hedged_answer(*it) if hedge else str(solve(*it))
        rows.append({"messages": user(question(*it)) + assistant(answer)})
    return rows


def hedged_pair_rows(seed: int, name: str = "arith-pairs-hedged") -> list[dict]:
    return correct_vs(name, seed, SIZES[name], name == "arith-pairs-hedged-eval",
                      lambda it, rng: hedged_answer(*it))


BUILDERS = {"arith-sft-hedged": hedged_sft_rows, "arith-pairs-hedged": hedged_pair_rows,
            "arith-pairs-hedged-eval": lambda seed: hedged_pair_rows(seed, "arith-pairs-hedged-eval")}
