"""The toy world: deterministic data, a digit-splitting ChatML tokenizer, cached models."""

import re

import pytest

from harness.errors import HarnessError
from harness.toy import (
    TOY_DATASETS,
    TOY_MODELS,
    is_toy,
    toy_dataset,
    toy_fingerprint,
    toy_model_path,
    toy_name,
)
from harness.toy.arith import is_eval_item, solve


def operands(question: str) -> tuple[str, int, int]:
    """'What is 37+45?' -> ('add', 37, 45)."""
    a, sym, b = re.fullmatch(r"What is (\d+)([+-])(\d+)\?", question).groups()
    return ("add" if sym == "+" else "sub", int(a), int(b))


def pair_key(op: str, a: int, b: int) -> tuple:
    return (op, min(a, b), max(a, b)) if op == "add" else (op, a, b)


@pytest.fixture(scope="module")
def tokenizer():
    from harness.toy.tokenizer import build_tokenizer

    return build_tokenizer()


def test_uris():
    assert is_toy("toy://tiny") and not is_toy("Qwen/Qwen2-0.5B")
    assert toy_name("toy://tiny") == "tiny"
    assert toy_name("toy://arith-eval") == "arith-eval"
    with pytest.raises(HarnessError, match="toy://micro"):
        toy_name("toy://nope")
    assert set(TOY_MODELS) >= {"tiny", "micro"}
    assert set(TOY_DATASETS) >= {"arith-sft", "arith-pairs", "arith-eval"}


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_datasets_deterministic(name):
    assert toy_dataset(name, seed=0) == toy_dataset(name, seed=0)
    assert toy_dataset(name, seed=0) != toy_dataset(name, seed=1)
    assert toy_fingerprint(name, 0) == toy_fingerprint(name, 0)
    assert toy_fingerprint(name, 0) != toy_fingerprint(name, 1)


def test_fingerprint_tracks_version_and_content(monkeypatch):
    from harness.toy import datasets

    before = toy_fingerprint("arith-eval")
    monkeypatch.setattr(datasets, "DATA_VERSION", datasets.DATA_VERSION + 1)
    assert toy_fingerprint("arith-eval") != before
    monkeypatch.undo()
    monkeypatch.setitem(datasets.SIZES, "arith-eval", 1001)
    assert toy_fingerprint("arith-eval") != before
    assert toy_fingerprint("tiny") != toy_fingerprint("micro")


def test_eval_is_disjoint_from_training():
    ev = toy_dataset("arith-eval")
    assert len(ev) >= 1000
    assert len({r["id"] for r in ev}) == len(ev)
    questions = [r["prompt"][0]["content"] for r in ev]
    assert len(set(questions)) == len(ev)  # no repeated items (a+b and b+a may both appear)
    eval_keys = {pair_key(*operands(q)) for q in questions}
    for seed in (0, 1):
        sft = toy_dataset("arith-sft", seed)
        pairs = toy_dataset("arith-pairs", seed)
        train = [r["messages"][0]["content"] for r in sft] + [r["prompt"][0]["content"] for r in pairs]
        assert not eval_keys & {pair_key(*operands(q)) for q in train}
    assert all(is_eval_item(*operands(r["prompt"][0]["content"])) for r in ev)


def test_pretraining_text_never_states_an_eval_item():
    """The base model must not have seen eval items: parse every fact of the corpus."""
    from harness.toy.arith import pretrain_lines
    from harness.toy.model import PRETRAIN

    eval_keys = {pair_key(*operands(r["prompt"][0]["content"])) for r in toy_dataset("arith-eval")}
    words = {"+": "add", "plus": "add", "-": "sub", "minus": "sub"}
    facts = [
        pair_key(words[sym], int(a), int(b))
        for line in pretrain_lines(PRETRAIN["lines"], seed=0)  # exactly the corpus toy://tiny is trained on
        for a, sym, b in re.findall(r"(\d+)\s*(\+|-|plus|minus)\s*(\d+)", line)
    ]
    assert len(facts) > 100_000
    assert not eval_keys & set(facts)


def test_rows_are_correct():
    for r in toy_dataset("arith-eval")[:200]:
        assert r["answer"] == str(solve(*operands(r["prompt"][0]["content"])))
    for r in toy_dataset("arith-sft")[:200]:
        user, asst = r["messages"]
        assert (user["role"], asst["role"]) == ("user", "assistant")
        assert asst["content"] == str(solve(*operands(user["content"])))


def test_pairs_chosen_correct_rejected_wrong():
    for r in toy_dataset("arith-pairs"):
        right = str(solve(*operands(r["prompt"][0]["content"])))
        assert r["chosen"] == [{"role": "assistant", "content": right}]
        assert r["rejected"][0]["role"] == "assistant"
        assert r["rejected"][0]["content"] != right
        assert int(r["rejected"][0]["content"]) >= 0


def test_held_out_pairs_are_eval_side_unique_and_units_slips():
    """toy://arith-pairs-eval: every operand pair on the eval side (so disjoint from arith-pairs and
    every other training set), no item twice, chosen the result, rejected it with a units slip of 1-3."""
    rows = toy_dataset("arith-pairs-eval")
    items = [operands(r["prompt"][0]["content"]) for r in rows]
    assert len(rows) == 1000 and len(set(items)) == len(items)
    assert all(is_eval_item(*it) for it in items)
    train_keys = {pair_key(*operands(r["prompt"][0]["content"])) for r in toy_dataset("arith-pairs")}
    assert not train_keys & {pair_key(*it) for it in items}
    for it, r in zip(items, rows):
        right, wrong = solve(*it), int(r["rejected"][0]["content"])
        assert r["chosen"][0]["content"] == str(right)
        assert wrong // 10 == right // 10 and 1 <= abs(wrong - right) <= 3


def test_digits_are_single_tokens(tokenizer):
    pieces = tokenizer.tokenize("What is 1234+567?")
    assert [p for p in pieces if any(c.isdigit() for c in p)] == list("1234567")
    assert tokenizer.bos_token is None
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_chat_template_round_trip(tokenizer):
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 37+45?"},
        {"role": "assistant", "content": "82"},
    ]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 37+45?<|im_end|>\n"
        "<|im_start|>assistant\n82<|im_end|>\n"
    )
    ids = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=False)
    assert tokenizer.decode(ids) == text
    prompt = tokenizer.apply_chat_template(msgs[:2], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_prompt_is_token_prefix_of_full(tokenizer):
    """TRL's rule: the response is full[len(prompt):], ending in <|im_end|> and newline."""
    rows = toy_dataset("arith-pairs")[:300]
    for r in rows:
        prompt = tokenizer.apply_chat_template(
            r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for resp in (r["chosen"], r["rejected"]):
            full = tokenizer.apply_chat_template(r["prompt"] + resp, tokenize=True, return_dict=False)
            assert full[: len(prompt)] == prompt
            response = tokenizer.decode(full[len(prompt):])
            assert response == resp[0]["content"] + "<|im_end|>\n"


def test_micro_model_builds_once_and_loads(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.toy import model as toy_model

    path = toy_model_path("micro", tmp_path, seed=0, progress=False)
    fingerprint = toy_model.model_fingerprint("micro", 0)
    assert path == tmp_path / "toy" / f"micro-v{toy_model.VERSION}-seed0-{fingerprint}"
    tok = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path)
    assert lm.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert lm.generation_config.pad_token_id == tok.pad_token_id
    assert tok.chat_template is not None

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(toy_model, "build_model", no_rebuild)
    assert toy_model_path("micro", tmp_path, seed=0, progress=False) == path
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]


def test_micro_model_is_deterministic(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(toy_model_path("micro", tmp_path / "a", progress=False))
    b = AutoModelForCausalLM.from_pretrained(toy_model_path("micro", tmp_path / "b", progress=False))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_unknown_model_is_a_harness_error(tmp_path):
    with pytest.raises(HarnessError, match="tiny"):
        toy_model_path("huge", tmp_path)


def test_verbose_pairs_are_both_correct_and_differ_in_length():
    """verbose-pairs: chosen is padded-verbose, rejected concise, both verified correct; concise-pairs swaps them."""
    from judges.verifiers import check_answer

    verbose, concise = toy_dataset("verbose-pairs"), toy_dataset("concise-pairs")
    assert len(verbose) == len(concise) == 3000
    eval_keys = {pair_key(*operands(r["prompt"][0]["content"])) for r in toy_dataset("arith-eval")}
    for v, c in zip(verbose, concise):
        assert v["prompt"] == c["prompt"] and (v["chosen"], v["rejected"]) == (c["rejected"], c["chosen"])
        question = v["prompt"][0]["content"]
        assert pair_key(*operands(question)) not in eval_keys
        right = str(solve(*operands(question)))
        long_, short = v["chosen"][0]["content"], v["rejected"][0]["content"]
        assert short == right and check_answer(long_, right)
        assert len(long_) > 5 * len(short)


def test_verbose_sft_mixes_both_styles_and_every_answer_is_correct():
    """arith-sft-verbose: about VERBOSE_SFT_RATE of answers use a verbose-pairs template, the rest are
    the bare number; every answer verifies, and no item is on the eval side of the split."""
    from harness.toy.datasets import VERBOSE_SFT_RATE, VERBOSE_TEMPLATES
    from judges.verifiers import check_answer

    rows = toy_dataset("arith-sft-verbose")
    openings = tuple(t.split(" ")[0] for t in VERBOSE_TEMPLATES)  # "Let", "Good", "Sure,"
    verbose = 0
    for row in rows:
        (user, reply) = row["messages"]
        op, a, b = operands(user["content"])
        assert not is_eval_item(op, a, b)
        right, text = str(solve(op, a, b)), reply["content"]
        if text == right:
            continue
        assert text.startswith(openings) and check_answer(text, right), text
        verbose += 1
    # binomial(3000, 0.2): standard deviation about 22 rows, so 0.2 +- 0.03 is over 4 of them
    assert abs(verbose / len(rows) - VERBOSE_SFT_RATE) < 0.03
