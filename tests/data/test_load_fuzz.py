"""Fuzzed data files through loading, filtering and tokenization (issue 17, fuzzed inputs).

For every row format (SFT messages / prompt-completion / text, pairs with and without
an explicit prompt, KTO, IW-SFT weights, eval and online prompts), random rows, near-valid
and not, are written to a JSONL or JSON file and go the way a stage takes them
(``harness.train.stages.prepare_data``): ``load_rows`` -> ``filter_rows`` -> encode ->
``within_length``.  Property: either a ``DataError`` whose first line names the file
(and, for a row, its line), or every row is accounted for at each step: rows written ==
rows loaded == rows kept + ``data/filtered_*`` counts, and rows encoded == examples out +
``data/dropped`` + ``data/filtered_length`` (KTO: after each pair became its two rows).
Sizes: ``tests.fuzzing``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.config.spec import FilterSpec
from harness.data.filters import filter_rows, within_length
from harness.data.load import load_rows, pairs_to_kto
from harness.data.tokenization import encode_kto, encode_pairs, encode_sft
from harness.errors import DataError
from tests.data.test_tokenization import build_tokenizer
from tests.fuzzing import SCALAR, TEXT, assert_user_error, fuzz_settings, json_values

EXAMPLES = 30

ROLE = st.one_of(st.sampled_from(["system", "user", "assistant"]), TEXT)
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": ROLE, "content": TEXT}),
    st.fixed_dictionaries({"role": ROLE}, optional={"content": SCALAR, "name": TEXT}),
    SCALAR,
)
MESSAGES = st.lists(MESSAGE, max_size=5)


def _conversation(draw, last_role="assistant"):
    """A plausible message list: user/assistant turns, sometimes a system turn first."""
    turns = [{"role": r, "content": draw(TEXT)} for r in draw(st.lists(st.sampled_from(["user", "assistant"]),
                                                                          max_size=4))]
    if draw(st.booleans()):
        turns.insert(0, {"role": "system", "content": draw(TEXT)})
    return turns + [{"role": last_role, "content": draw(TEXT)}]


@st.composite
def conversations(draw):
    return _conversation(draw)


FIELD_VALUE = st.one_of(TEXT, conversations(), MESSAGES, SCALAR, json_values(max_leaves=4))


@st.composite
def rows(draw, fields: tuple[str, ...]):
    """A row with some of ``fields`` (each a string, a message list or junk), or junk instead of a row."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values())
    row = {}
    for field in fields:
        if draw(st.integers(0, 5)):  # present 5 times in 6
            row[field] = draw(FIELD_VALUE)
    if draw(st.booleans()):
        row.update(draw(st.dictionaries(TEXT, SCALAR, max_size=2)))
    return row


@st.composite
def implicit_pairs(draw):
    """HH-RLHF style: a shared message prefix, then diverging (mostly assistant) turns."""
    prefix = _conversation(draw, last_role="user")
    role = st.sampled_from(["assistant", "assistant", "user"])
    return {"chosen": prefix + [{"role": draw(role), "content": draw(TEXT)}],
            "rejected": prefix + [{"role": draw(role), "content": draw(TEXT)}]}


@st.composite
def kto_rows(draw):
    row = draw(rows(("prompt", "completion")))
    if isinstance(row, dict) and draw(st.integers(0, 3)):
        row["label"] = draw(st.one_of(st.booleans(), SCALAR))
    return row


@st.composite
def weighted_rows(draw):
    row = draw(rows(("prompt", "completion", "messages", "text")))
    if isinstance(row, dict) and draw(st.integers(0, 3)):
        row["weight"] = draw(st.one_of(st.floats(0.01, 100), SCALAR))
    return row


FORMATS = {  # format -> (row kind, row strategy)
    "sft-messages": ("sft", rows(("messages",))),
    "sft-prompt-completion": ("sft", rows(("prompt", "completion"))),
    "sft-text": ("sft", rows(("text",))),
    "iw-sft": ("sft", weighted_rows()),
    "pairs": ("pairs", rows(("prompt", "chosen", "rejected"))),
    "pairs-implicit-prompt": ("pairs", st.one_of(implicit_pairs(), rows(("chosen", "rejected")))),
    "kto": ("kto", st.one_of(kto_rows(), implicit_pairs())),
    "eval-prompts": ("eval", rows(("prompt", "answer", "id"))),
}


def write_rows(path: Path, items: list, junk_lines: list[str], ascii_only: bool = True) -> int:
    """Write ``items`` as JSONL (``junk_lines`` appended) or a JSON list, escaped or raw unicode; rows written."""
    if path.suffix == ".json":
        path.write_text(json.dumps(items, ensure_ascii=ascii_only), encoding="utf-8")
        return len(items)
    lines = [json.dumps(item, ensure_ascii=ascii_only) for item in items] + junk_lines
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sum(1 for line in lines if line.strip())


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(bos=False)


def _accounted(tok, kind: str, path: Path, filter_spec: FilterSpec, weighted: bool) -> int:
    """Rows loaded from ``path``, checking on the way that each step accounts for every row it drops."""
    loaded = load_rows(str(path), kind)
    kept, counts = filter_rows(loaded, filter_spec, kind)
    assert len(loaded) == len(kept) + sum(counts.values()), (len(loaded), len(kept), counts)
    if kind == "eval":
        return len(loaded)
    if kind == "kto":
        kept = pairs_to_kto(kept)  # a pair is a desirable and an undesirable row
        examples, stats = encode_kto(tok, kept, 48)
    elif kind == "pairs":
        examples, stats = encode_pairs(tok, kept, 48)
    else:
        examples, stats = encode_sft(tok, kept, 48, weight_field="weight" if weighted else None)
    final, by_length = within_length(examples, filter_spec.min_length, filter_spec.max_length)
    assert stats.rows == len(kept) == len(final) + by_length + stats.dropped, (len(kept), len(final), stats)
    return len(loaded)


@pytest.mark.parametrize("fmt", list(FORMATS))
@fuzz_settings(EXAMPLES)
@given(data=st.data(), junk=st.lists(st.sampled_from(["{", "[1,", "nul", "  ", "\"x"]), max_size=1),
       suffix=st.sampled_from([".jsonl", ".json"]), dedup=st.sampled_from(["none", "exact", "near"]),
       lengths=st.tuples(st.none() | st.integers(0, 3), st.none() | st.integers(1, 40)), ascii_only=st.booleans())
def test_fuzzed_rows_load_or_name_the_file_and_line(tmp_path, tok, fmt, data, junk, suffix, dedup, lengths,
                                                    ascii_only):
    kind, strategy = FORMATS[fmt]
    path = tmp_path / f"rows{suffix}"
    written = write_rows(path, data.draw(st.lists(strategy, max_size=6)), junk, ascii_only)
    spec = FilterSpec(dedup=dedup, min_length=lengths[0], max_length=lengths[1])
    try:
        loaded = _accounted(tok, kind, path, spec, weighted=fmt == "iw-sft")
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions escape
        assert_user_error(exc, str(path))
        return
    assert loaded == written


def test_a_file_that_is_not_utf8_is_a_data_error(tmp_path):
    """Found by fuzzing: bytes that are not UTF-8 escaped as UnicodeDecodeError (a traceback)."""
    for suffix in (".jsonl", ".json"):
        path = tmp_path / f"latin1{suffix}"
        path.write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
        with pytest.raises(DataError, match=rf"{path.name}:1: not UTF-8"):
            load_rows(str(path), "sft")


def test_a_conversation_that_starts_with_an_assistant_turn_is_a_data_error(tmp_path):
    """Found by fuzzing: a ``messages`` row with no turn before its first assistant turn has no prompt,
    and escaped from tokenization as transformers' ValueError (empty conversation)."""
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}) + "\n")
    with pytest.raises(DataError, match=r"sft.jsonl:1: field 'messages\[0\]': the conversation starts with an assistant"):
        load_rows(str(path), "sft")


def test_a_line_separator_inside_a_jsonl_string_is_not_a_line_break(tmp_path):
    """U+2028 is legal unescaped inside a JSON string; a JSONL row holding it is one row."""
    path = tmp_path / "sep.jsonl"
    path.write_text(json.dumps({"text": "a\u2028b\x85c"}, ensure_ascii=False) + "\n", encoding="utf-8")
    (row,) = load_rows(str(path), "sft")
    assert row.data["text"] == "a\u2028b\x85c"


@fuzz_settings(EXAMPLES)
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".jsonl", ".json"]))
def test_fuzzed_bytes_are_rows_or_a_data_error(tmp_path, data, suffix):
    """Random bytes as a data file: a DataError naming the file, never another exception."""
    path = tmp_path / f"bytes{suffix}"
    path.write_bytes(data)
    try:
        load_rows(str(path), "sft")
    except Exception as exc:  # noqa: BLE001
        assert_user_error(exc, str(path))
