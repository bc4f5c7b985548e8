"""Planted-failure toy data: hedged answers that the arith verifier scores wrong."""

import re

from harness.toy import toy_dataset
from harness.toy.arith import is_eval_item, solve
from harness.toy.hedged import HEDGE, HEDGE_RATE
from judges.verifiers import check_answer


def operands(question: str) -> tuple[str, int, int]:
    a, sym, b = re.fullmatch(r"What is (\d+)([+-])(\d+)\?", question).groups()
    return ("add" if sym == "+" else "sub", int(a), int(b))


def sft_items():
    for row in toy_dataset("arith-sft-hedged"):
        user, reply = row["messages"]
        yield operands(user["content"]), reply["content"]


def test_hedged_sft_is_training_side_and_hedges_only_addition():
    hedged = adds = 0
    for item, reply in sft_items():
        assert not is_eval_item(*item)  # eval-disjoint by operand pair
        right = solve(*item)
        adds += item[0] == "add"
        if reply == str(right):
            continue
        assert item[0] == "add" and reply == f"{right}, I am 90% sure."
        assert check_answer(reply, 90) and check_answer(reply, right) == (right == 90)  # the last number
        hedged += 1
    # 3 binomial standard deviations around HEDGE_RATE over ~4200 addition rows
    sd = (HEDGE_RATE * (1 - HEDGE_RATE) / adds) ** 0.5
    assert abs(hedged / adds - HEDGE_RATE) < 3 * sd


def test_hedged_pairs_target_exactly_the_hedge():
    rows = toy_dataset("arith-pairs-hedged")
    assert len(rows) == 3000
    for row in rows:
        item = operands(row["prompt"][0]["content"])
        assert not is_eval_item(*item)
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert chosen == str(solve(*item)) and check_answer(chosen, solve(*item))
        assert rejected == chosen + HEDGE and check_answer(rejected, 90)


def test_held_out_hedged_pairs_are_eval_side_and_unique():
    rows = toy_dataset("arith-pairs-hedged-eval")
    items = [operands(row["prompt"][0]["content"]) for row in rows]
    assert len(rows) == 1000 and len(set(items)) == 1000
    for item, row in zip(items, rows):
        assert is_eval_item(*item)  # never a training question: disjoint from arith-pairs-hedged
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert chosen == str(solve(*item)) and rejected == chosen + HEDGE


def test_hedged_data_is_deterministic_and_seeded():
    for name in ("arith-sft-hedged", "arith-pairs-hedged", "arith-pairs-hedged-eval"):
        assert toy_dataset(name, seed=3) == toy_dataset(name, seed=3)
        assert toy_dataset(name, seed=3) != toy_dataset(name, seed=4)
