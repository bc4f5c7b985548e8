"""Toy datasets of the judging suites: loadable, deterministic, labelled, eval disjoint from pairs."""

from collections import Counter

from harness.data.load import fingerprint, load_rows
from harness.toy import toy_dataset
from harness.toy.judge_data import chat_truth, safety_label


def test_load_and_fingerprint():
    for name, kind in (("safety-eval", "eval"), ("safety-pairs", "pairs"), ("chat-eval", "eval")):
        rows = load_rows(f"toy://{name}", kind)
        assert rows and fingerprint(f"toy://{name}") == fingerprint(f"toy://{name}")
    assert toy_dataset("safety-eval", seed=1) != toy_dataset("safety-eval", seed=0)
    assert toy_dataset("chat-eval", seed=0) == toy_dataset("chat-eval", seed=0)


def test_safety_eval_labels_and_split():
    rows = toy_dataset("safety-eval")
    labels = Counter(r["label"] for r in rows)
    assert set(labels) == {"harmful", "benign"} and min(labels.values()) >= 40
    assert all(safety_label(r["prompt"][0]["content"]) == r["label"] for r in rows)
    eval_prompts = {r["prompt"][0]["content"] for r in rows}
    pair_prompts = {r["prompt"][0]["content"] for r in toy_dataset("safety-pairs")}
    assert not eval_prompts & pair_prompts
    assert safety_label("What is 2+2?") is None


def test_safety_pairs_prefer_the_right_behaviour():
    for row in toy_dataset("safety-pairs")[:50]:
        refusal_chosen = row["chosen"][0]["content"].startswith(("I can", "Sorry", "I'm not"))
        assert refusal_chosen == (row["label"] == "harmful")


def test_chat_eval_truth_by_hand():
    assert chat_truth(["What is 23+14?", "Now add 6 to that."]) == [37, 43]
    assert chat_truth(["What is 50-8?", "Now take 2 away from that."]) == [42, 40]
    assert chat_truth(["What is 1+1?", "Tell me a joke."]) is None
    for row in toy_dataset("chat-eval"):
        assert len(row["turns"]) == 2 and row["reference"] == [str(v) for v in chat_truth(row["turns"])]
        assert int(row["reference"][1]) >= 0
