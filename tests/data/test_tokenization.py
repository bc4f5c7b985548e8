"""Tokenization by TRL's rule, truncation, and collation.

Expected ids are built independently of harness: by rendering the chat
template to text and tokenizing that text, or by tokenizing the pieces of a
plain-string example on word boundaries.
"""

import types

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from harness.data.collate import collate_pairs, collate_sft, left_pad
from harness.data.load import Row
from harness.data.tokenization import (
    Encoded,
    EncodedPair,
    TokenStats,
    encode_pairs,
    encode_prompt,
    encode_sft,
)
from harness.errors import DataError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is 12 + 35? The answer is 47.",
    "hello world, hello there, how are you today?",
    "user assistant system: you are a helpful assistant.",
] * 20


def build_tokenizer(bos: bool) -> PreTrainedTokenizerFast:
    """A byte-level BPE with single-digit tokens and a ChatML template; EOS = <|im_end|>.

    With ``bos``, a TemplateProcessing post-processor prepends <|endoftext|> as BOS
    to plain-text encodings (the tokenizer's "default special tokens").
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    extra = {}
    if bos:
        bos_id = tok.token_to_id("<|endoftext|>")
        tok.post_processor = processors.TemplateProcessing(
            single="<|endoftext|> $A", pair="<|endoftext|> $A $B", special_tokens=[("<|endoftext|>", bos_id)]
        )
        extra["bos_token"] = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML, **extra
    )


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(bos=False)


@pytest.fixture(scope="module")
def bos_tok():
    return build_tokenizer(bos=True)


def rows(*datas):
    return [Row("mem.jsonl", i + 1, d) for i, d in enumerate(datas)]


def raw(tok, text):
    """Ids of text with no special tokens added (the independent reference)."""
    return tok(text, add_special_tokens=False)["input_ids"]


USER = [{"role": "user", "content": "What is 12 + 35?"}]
ANSWER = [{"role": "assistant", "content": "The answer is 47."}]
WRONG = [{"role": "assistant", "content": "The answer is 48."}]
PROMPT_TEXT = "<|im_start|>user\nWhat is 12 + 35?<|im_end|>\n<|im_start|>assistant\n"
ANSWER_TEXT = "The answer is 47.<|im_end|>\n"


# ------------------------------------------------------------------ message lists


@pytest.mark.parametrize("use_bos", [False, True])
def test_messages_follow_the_chat_template(tok, bos_tok, use_bos):
    """prompt = template(prompt, generation prompt); response = the rest, end-of-turn included, no EOS added.

    The template is ChatML, so the expected texts are written out by hand.  The
    template carries all special tokens: the BOS post-processor adds nothing.
    """
    t = bos_tok if use_bos else tok
    expected_prompt, expected_response = raw(t, PROMPT_TEXT), raw(t, ANSWER_TEXT)
    for data in ({"messages": USER + ANSWER}, {"prompt": USER, "completion": ANSWER}):
        (enc,), stats = encode_sft(t, rows(data), max_length=512)
        assert enc.prompt_ids == expected_prompt
        assert enc.response_ids == expected_response
        assert stats == TokenStats(rows=1)


HELLO = [{"role": "user", "content": "hello"}]
HELLO_TEXT = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
WRONG_TEXT = "The answer is 48.<|im_end|>\n"


def test_assistant_turns_last_trains_the_last_turn(tok):
    (enc,), _ = encode_sft(tok, rows({"messages": USER + ANSWER + HELLO + WRONG}), 512, assistant_turns="last")
    assert enc.prompt_ids == raw(tok, PROMPT_TEXT + ANSWER_TEXT + HELLO_TEXT)
    assert enc.response_ids == raw(tok, WRONG_TEXT)
    assert enc.response_mask is None


def test_assistant_turns_all_masks_every_assistant_turn(tok):
    """The prompt ends at the first assistant turn; each assistant turn (with its <|im_end|>\\n)
    is a target and the user turn between them is context, written out by hand from ChatML."""
    (enc,), stats = encode_sft(tok, rows({"messages": USER + ANSWER + HELLO + WRONG}), 512)
    first, between, second = raw(tok, ANSWER_TEXT), raw(tok, HELLO_TEXT), raw(tok, WRONG_TEXT)
    assert enc.prompt_ids == raw(tok, PROMPT_TEXT)
    assert enc.response_ids == first + between + second
    assert enc.response_mask == [1] * len(first) + [0] * len(between) + [1] * len(second)
    assert stats == TokenStats(rows=1)
    batch = collate_sft([enc], pad_id=0)
    assert batch["loss_mask"][0].tolist() == [0] * len(enc.prompt_ids) + enc.response_mask
    from harness.train.forward import target_count

    assert target_count(enc) == len(first) + len(second)
    # One assistant turn: the same tokens as before, no mask needed.
    (single,), _ = encode_sft(tok, rows({"messages": USER + ANSWER}), 512)
    assert (single.response_ids, single.response_mask) == (first, None)


def test_truncation_cuts_the_mask_with_the_response(tok):
    """Cutting the response's end cuts its mask: the first turn and two tokens of the user turn remain."""
    long = {"messages": USER + ANSWER + HELLO + WRONG}
    n_prompt, n_first = len(raw(tok, PROMPT_TEXT)), len(raw(tok, ANSWER_TEXT))
    (enc,), stats = encode_sft(tok, rows(long), max_length=n_prompt + n_first + 2, max_prompt_length=n_prompt)
    assert enc.response_mask == [1] * n_first + [0, 0]
    assert len(enc.response_ids) == n_first + 2 and stats.truncated == 1


def test_text_rows_train_on_every_token(tok, bos_tok):
    """{"text"}: tokenizer(text + eos); the first token (BOS when the tokenizer adds one) is the only non-target."""
    for t, bos in ((tok, []), (bos_tok, [bos_tok.bos_token_id])):
        (enc,), _ = encode_sft(t, rows({"text": "hello world"}), max_length=512)
        ids = bos + raw(t, "hello world") + [t.eos_token_id]
        assert enc.prompt_ids == ids[:1] and enc.response_ids == ids[1:]
        assert target_count_of(enc) == len(ids) - 1
    (cut,), stats = encode_sft(tok, rows({"text": DIGITS * 3}), max_length=8)
    assert cut.prompt_ids + cut.response_ids == raw(tok, DIGITS[:8]) and stats.truncated == 1


def target_count_of(enc):
    from harness.train.forward import target_count

    return target_count(enc)


def test_weights_are_carried(tok):
    data = [{"prompt": "hello", "completion": " world", "weight": 0.25}, {"text": "hello", "weight": 3}]
    encs, _ = encode_sft(tok, rows(*data), 512, weight_field="weight")
    assert [e.weight for e in encs] == [0.25, 3.0]
    assert encode_sft(tok, rows(*data), 512)[0][0].weight is None
    with pytest.raises(DataError, match="mem.jsonl:1: field 'w': missing"):
        encode_sft(tok, rows(*data), 512, weight_field="w")


def test_kto_rows_encode_like_sft(tok):
    from harness.data.load import pairs_to_kto
    from harness.data.tokenization import EncodedKTO, encode_kto

    kto_rows = pairs_to_kto(rows({"prompt": USER, "chosen": ANSWER, "rejected": WRONG},
                                 {"prompt": "hello", "completion": " world", "label": False}))
    encs, stats = encode_kto(tok, kto_rows, 512)
    assert encs == [
        EncodedKTO(raw(tok, PROMPT_TEXT), raw(tok, ANSWER_TEXT), True, "mem.jsonl", 1),
        EncodedKTO(raw(tok, PROMPT_TEXT), raw(tok, WRONG_TEXT), False, "mem.jsonl", 1),
        EncodedKTO(raw(tok, "hello"), raw(tok, " world") + [tok.eos_token_id], False, "mem.jsonl", 2),
    ]
    assert stats == TokenStats(rows=3)


def test_pairs_of_messages_share_the_prompt(tok):
    (pair,), stats = encode_pairs(tok, rows({"prompt": USER, "chosen": ANSWER, "rejected": WRONG}), 512)
    assert pair.prompt_ids == raw(tok, PROMPT_TEXT)
    assert pair.chosen_ids == raw(tok, ANSWER_TEXT)
    assert pair.rejected_ids == raw(tok, "The answer is 48.<|im_end|>\n")
    assert (pair.source, pair.line) == ("mem.jsonl", 1)
    assert stats.as_metrics() == {
        "data/rows": 1,
        "data/prefix_mismatch": 0,
        "data/truncated": 0,
        "data/dropped": 0,
    }


# ------------------------------------------------------------------ plain strings


def test_plain_strings_get_eos_once(tok):
    plain = {"prompt": "What is 12 + 35?", "completion": " The answer is 47."}
    with_eos = {"prompt": "What is 12 + 35?", "completion": " The answer is 47.<|im_end|>"}
    encs, _ = encode_sft(tok, rows(plain, with_eos), max_length=512)
    for enc in encs:
        assert enc.prompt_ids == raw(tok, "What is 12 + 35?")
        assert enc.response_ids == raw(tok, " The answer is 47.") + [tok.eos_token_id]
        assert enc.response_ids.count(tok.eos_token_id) == 1


def test_plain_strings_use_default_special_tokens(bos_tok):
    """BOS comes from the tokenizer's post-processor, once, at the start of the prompt."""
    (enc,), _ = encode_sft(bos_tok, rows({"prompt": "hello", "completion": " world"}), max_length=512)
    assert enc.prompt_ids == [bos_tok.bos_token_id] + raw(bos_tok, "hello")
    assert enc.response_ids == raw(bos_tok, " world") + [bos_tok.eos_token_id]


@pytest.mark.parametrize("use_bos", [False, True])
def test_prefix_mismatch_uses_common_prefix_and_is_counted(tok, bos_tok, use_bos):
    """'hello wor' + 'ld': BPE merges ' wor'+'ld' into ' world', so the prompt's last token
    is not in the full sequence; the prompt becomes the common prefix (just 'hello')."""
    t = bos_tok if use_bos else tok
    assert raw(t, " wor") != raw(t, " world")[:1]  # the precondition: tokens merge across the boundary
    bos = [t.bos_token_id] if use_bos else []
    data = {"prompt": "hello wor", "completion": "ld"}
    (enc,), stats = encode_sft(t, rows(data), max_length=512)
    assert enc.prompt_ids == bos + raw(t, "hello")
    assert enc.response_ids == raw(t, " world") + [t.eos_token_id]
    assert stats.prefix_mismatch == 1

    (pair,), stats = encode_pairs(t, rows({"prompt": "hello wor", "chosen": "ld", "rejected": "k"}), 512)
    assert pair.prompt_ids == bos + raw(t, "hello")  # the shorter common prefix serves both
    assert pair.chosen_ids == raw(t, " world") + [t.eos_token_id]
    assert pair.rejected_ids == raw(t, " work") + [t.eos_token_id]
    assert stats.prefix_mismatch == 1


# ------------------------------------------------------------------ truncation

DIGITS = "0123456789"  # digits are single tokens, so lengths are known exactly


def digit_ids(tok, text):
    return raw(tok, text)


def test_keep_end_of_prompt_cuts_prompt_start_then_response_end(tok):
    """Prompt 20 digits, response 12 digits + EOS = 13; max_length 16, max_prompt_length 6:
    prompt keeps its last 6 tokens, the response its first 16 - 6 = 10."""
    data = {"prompt": DIGITS * 2, "completion": "987654321098"}
    short = {"prompt": "12", "completion": "3"}
    encs, stats = encode_sft(tok, rows(data, short), max_length=16, max_prompt_length=6)
    assert encs[0].prompt_ids == digit_ids(tok, "456789")
    assert encs[0].response_ids == digit_ids(tok, "9876543210")
    assert encs[1].prompt_ids == digit_ids(tok, "12")  # fits: untouched
    assert stats == TokenStats(rows=2, truncated=1)


def test_default_max_prompt_length_is_half(tok):
    data = {"prompt": DIGITS * 2, "completion": "98765"}
    (enc,), _ = encode_sft(tok, rows(data), max_length=16)
    assert enc.prompt_ids == digit_ids(tok, "23456789")
    assert enc.response_ids == digit_ids(tok, "98765") + [tok.eos_token_id]


def test_drop_and_error_strategies(tok):
    long = {"prompt": DIGITS * 2, "completion": "5"}
    short = {"prompt": "12", "completion": "3"}
    encs, stats = encode_sft(tok, rows(short, long), max_length=16, truncation="drop")
    assert len(encs) == 1 and encs[0].line == 1
    assert stats == TokenStats(rows=2, dropped=1)
    with pytest.raises(DataError, match=r"mem.jsonl:2: 22 tokens exceed train.max_length=16"):
        encode_sft(tok, rows(short, long), max_length=16, truncation="error")


def test_pairs_truncate_jointly(tok):
    """One prompt cut for both; each response cut on its own to max_length - len(prompt)."""
    data = {"prompt": DIGITS * 2, "chosen": "1234567890123", "rejected": "98"}
    (pair,), stats = encode_pairs(tok, rows(data), max_length=16, max_prompt_length=6)
    assert pair.prompt_ids == digit_ids(tok, "456789")
    assert pair.chosen_ids == digit_ids(tok, "1234567890")
    assert pair.rejected_ids == digit_ids(tok, "98") + [tok.eos_token_id]
    assert stats == TokenStats(rows=1, truncated=1)
    pairs, stats = encode_pairs(tok, rows(data), max_length=16, truncation="drop")
    assert pairs == [] and stats.dropped == 1


# ------------------------------------------------------------------ generation prompts


def test_encode_prompt(tok, bos_tok):
    assert encode_prompt(tok, USER) == raw(tok, PROMPT_TEXT)
    system = "<|im_start|>system\nBe brief.<|im_end|>\n"
    assert encode_prompt(tok, USER, system_prompt="Be brief.") == raw(tok, system + PROMPT_TEXT)
    assert encode_prompt(bos_tok, "hello") == [bos_tok.bos_token_id] + raw(bos_tok, "hello")
    with pytest.raises(DataError, match="system_prompt"):
        encode_prompt(tok, "hello", system_prompt="Be brief.")


# ------------------------------------------------------------------ collation


def test_collate_sft_masks_and_padding():
    batch = collate_sft([Encoded([5, 6], [7, 8, 9]), Encoded([5], [7])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [5, 7, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["loss_mask"].tolist() == [[0, 0, 1, 1, 1], [0, 1, 0, 0, 0]]
    assert all(v.dtype == torch.long for v in batch.values())
    on_prompt = collate_sft([Encoded([5, 6], [7]), Encoded([5], [7])], pad_id=0, train_on_prompt=True)
    assert on_prompt["loss_mask"].tolist() == [[0, 1, 1], [0, 1, 0]]


def test_collate_pairs_is_chosen_then_rejected():
    pairs = [EncodedPair([1, 2], [3], [4, 4, 4]), EncodedPair([1], [5, 5], [6])]
    batch = collate_pairs(pairs, pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0, 0], [1, 5, 5, 0, 0], [1, 2, 4, 4, 4], [1, 6, 0, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [3, 3, 5, 2]
    assert batch["loss_mask"].tolist() == [[0, 0, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 0, 0, 0]]


def test_left_pad():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=9)
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


# ------------------------------------------------------------------ parity with TRL 1.16


def trl_prepare(trainer_cls, tokenizer, data, *extra):
    """Run TRL's own dataset preparation (``_prepare_dataset``) without building a trainer.

    It only reads ``self._tokenizer`` (SFT also ``completion_only_loss`` and
    ``chat_template``) and a few config fields, so a namespace stands in for both.
    """
    datasets = pytest.importorskip("datasets")
    fake_self = types.SimpleNamespace(_tokenizer=tokenizer, completion_only_loss=True, chat_template=None)
    args = types.SimpleNamespace(
        dataset_num_proc=None,
        max_length=None,
        truncation_mode="keep_end",
        dataset_text_field="text",
        assistant_only_loss=False,
        shuffle_dataset=False,
    )
    dataset = datasets.Dataset.from_list([data])
    return trainer_cls._prepare_dataset(fake_self, dataset, tokenizer, args, *extra, "train")[0]


@pytest.mark.parametrize("use_bos", [False, True])
@pytest.mark.parametrize(
    "data",
    [
        {"prompt": "hello wor", "chosen": "ld", "rejected": " there"},
        {"prompt": USER, "chosen": ANSWER, "rejected": WRONG},
    ],
)
def test_dpo_parity_with_trl(tok, bos_tok, use_bos, data):
    dpo = pytest.importorskip("trl.trainer.dpo_trainer")
    t = bos_tok if use_bos else tok
    expected = trl_prepare(dpo.DPOTrainer, t, data)
    (pair,), _ = encode_pairs(t, rows(data), max_length=512)
    assert pair.prompt_ids == expected["prompt_ids"]
    assert pair.chosen_ids == expected["chosen_ids"]
    assert pair.rejected_ids == expected["rejected_ids"]


@pytest.mark.parametrize("use_bos", [False, True])
@pytest.mark.parametrize(
    "data", [{"prompt": "hello wor", "completion": "ld"}, {"prompt": USER, "completion": ANSWER}]
)
def test_sft_parity_with_trl(tok, bos_tok, use_bos, data):
    sft = pytest.importorskip("trl.trainer.sft_trainer")
    t = bos_tok if use_bos else tok
    expected = trl_prepare(sft.SFTTrainer, t, data, False, None)  # packing=False, formatting_func=None
    (enc,), _ = encode_sft(t, rows(data), max_length=512)
    assert enc.prompt_ids + enc.response_ids == expected["input_ids"]
    assert [-100] * len(enc.prompt_ids) + enc.response_ids == expected["labels"]


GENERATION_CHATML = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}<|im_start|>assistant\n"
    "{% generation %}{{ m['content'] }}<|im_end|>\n{% endgeneration %}"
    "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_multi_turn_mask_parity_with_trl_assistant_only_loss():
    """TRL's assistant_only_loss reads {% generation %} spans from the template; harness derives the
    spans by prefix tokenization.  On a ChatML template whose generation spans are each assistant
    turn's content + end-of-turn, both give the same targets."""
    sft = pytest.importorskip("trl.trainer.sft_trainer")
    t = build_tokenizer(bos=False)
    t.chat_template = GENERATION_CHATML
    data = {"messages": USER + ANSWER + HELLO + WRONG}
    datasets = pytest.importorskip("datasets")
    fake_self = types.SimpleNamespace(_tokenizer=t, completion_only_loss=True, chat_template=None)
    args = types.SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_end",
                                 dataset_text_field="text", assistant_only_loss=True, shuffle_dataset=False)
    expected = sft.SFTTrainer._prepare_dataset(
        fake_self, datasets.Dataset.from_list([data]), t, args, False, None, "train")[0]
    (enc,), _ = encode_sft(t, rows(data), max_length=512)
    ids = enc.prompt_ids + enc.response_ids
    assert ids == expected["input_ids"]
    mask = [0] * len(enc.prompt_ids) + enc.response_mask
    assert [i if m else -100 for i, m in zip(ids, mask)] == expected["labels"]


@pytest.mark.parametrize("use_bos", [False, True])
def test_text_parity_with_trl(tok, bos_tok, use_bos):
    sft = pytest.importorskip("trl.trainer.sft_trainer")
    t = bos_tok if use_bos else tok
    expected = trl_prepare(sft.SFTTrainer, t, {"text": "hello world"}, False, None)
    (enc,), _ = encode_sft(t, rows({"text": "hello world"}), max_length=512)
    assert enc.prompt_ids + enc.response_ids == expected["input_ids"]
