"""Loading and checking data files: formats, error messages, fingerprints, subsets."""

import json

import pandas as pd
import pytest

from harness.data import load
from harness.data.load import Row, fingerprint, load_rows, take_fraction
from harness.errors import DataError, SpecError

MSG_SFT = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
PC_SFT = {"prompt": "2+2=", "completion": "4"}
PC_MSG_SFT = {
    "prompt": [{"role": "user", "content": "2+2?"}],
    "completion": [{"role": "assistant", "content": "4"}],
}
PAIR = {"prompt": "2+2=", "chosen": "4", "rejected": "5"}
PAIR_MSG = {
    "prompt": [{"role": "user", "content": "2+2?"}],
    "chosen": [{"role": "assistant", "content": "4"}],
    "rejected": [{"role": "assistant", "content": "5"}],
}
EVAL = {"prompt": "2+2=", "answer": "4", "id": "q1"}
EVAL_MSG = {"prompt": [{"role": "user", "content": "2+2?"}]}

TEXT_SFT = {"text": "2+2=4"}
KTO = {"prompt": "2+2=", "completion": "5", "label": False}
KTO_MSG = {"prompt": PAIR_MSG["prompt"], "completion": PAIR_MSG["chosen"], "label": True}

EXAMPLES = {
    "sft": [MSG_SFT, PC_SFT, PC_MSG_SFT, TEXT_SFT],
    "pairs": [PAIR, PAIR_MSG],
    "kto": [KTO, KTO_MSG, PAIR],
    "eval": [EVAL, EVAL_MSG],
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write(tmp_path, fmt, rows):
    """Write rows as JSONL, JSON or Parquet; returns the path as a string."""
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        return write_jsonl(path, rows)
    if fmt == "json":
        path.write_text(json.dumps(rows))
    else:
        pd.DataFrame(rows).to_parquet(path)
    return str(path)


def problems(tmp_path, rows, kind):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_rows(path, kind)
    return str(info.value), path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
@pytest.mark.parametrize("kind", ["sft", "pairs", "kto", "eval"])
def test_each_format_loads(tmp_path, fmt, kind):
    # Parquet needs one schema per file: write one row shape per file.
    for i, example in enumerate(EXAMPLES[kind]):
        sub = tmp_path / str(i)
        sub.mkdir()
        path = write(sub, fmt, [example, example])
        rows = load_rows(path, kind)
        assert [r.line for r in rows] == [1, 2]
        assert rows[0].source == path
        assert rows[0].data == example  # plain lists and dicts, also from Parquet


def test_jsonl_lines_count_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(PAIR) + "\n\n" + json.dumps(PAIR) + "\n")
    assert [r.line for r in load_rows(str(path), "pairs")] == [1, 3]


def test_extra_fields_are_kept(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{**PC_SFT, "weight": 0.5}])
    assert load_rows(path, "sft")[0].data["weight"] == 0.5


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(PAIR) + "\n" + json.dumps(PAIR) + "\n" + '{"prompt": "a" "chosen": "b"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:3: malformed JSON \(Expecting ',' delimiter"):
        load_rows(str(path), "pairs")


def test_missing_field(tmp_path):
    msg, path = problems(tmp_path, [PAIR] * 16 + [{"prompt": "a", "rejected": "b"}], "pairs")
    assert msg == f"{path}:17: field 'chosen': missing"


@pytest.mark.parametrize(
    ("row", "kind", "expected"),
    [
        ({"prompt": "a", "completion": "  "}, "sft", "field 'completion': empty"),
        ({"prompt": "a", "chosen": "", "rejected": "b"}, "pairs", "field 'chosen': empty"),
        (
            {"prompt": 3, "chosen": "a", "rejected": "b"},
            "pairs",
            "field 'prompt': expected a string or a list",
        ),
        (
            {"prompt": "a", "chosen": "b", "rejected": PAIR_MSG["rejected"]},
            "pairs",
            "mix strings and message",
        ),
        ({"messages": [{"role": "user", "content": "a"}]}, "sft", "last message must be an assistant turn"),
        ({"messages": [{"role": "bot", "content": "a"}]}, "sft", "field 'messages[0]': unknown role 'bot'"),
        ({"messages": [{"role": "assistant"}]}, "sft", "field 'messages[0]': message without string content"),
        ({"messages": [{"role": "assistant", "content": ""}]}, "sft", "empty assistant response"),
        ({"text": ""}, "sft", "field 'text': empty"),
        ({"text": 3}, "sft", "field 'text': expected a string, got int"),
        ({"answer": "a"}, "sft", "field 'messages': missing (or give 'prompt' and 'completion', or 'text')"),
        ({"prompt": "a", "completion": "b", "label": "yes"}, "kto", "field 'label': expected true or false, got 'yes'"),
        ({"prompt": "a", "completion": "b"}, "kto", "field 'label': missing"),
        ({"chosen": "a", "rejected": "b"}, "pairs", "field 'prompt': missing (needed when 'chosen' is a string"),
        (
            {"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
             "rejected": [{"role": "user", "content": "z"}, {"role": "assistant", "content": "b"}]},
            "pairs",
            "field 'prompt': missing, and 'chosen'/'rejected' share no leading messages",
        ),
        (
            {"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}],
             "rejected": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                          {"role": "user", "content": "x"}, {"role": "assistant", "content": "d"}]},
            "kto",
            "field 'chosen[2]': role 'user' after the common prefix of 2 messages",
        ),
        ({"prompt": "a", "answer": [1]}, "eval", "field 'answer': expected a string or number"),
        ({"answer": "1"}, "eval", "field 'prompt': missing"),
        (["not", "an", "object"], "eval", "expected a JSON object, got list"),
    ],
)
def test_row_errors_name_line_and_field(tmp_path, row, kind, expected):
    msg, path = problems(tmp_path, [row], kind)
    assert msg.startswith(f"{path}:1: ")
    assert expected in msg


def test_problems_are_collected_into_one_error(tmp_path):
    bad = {"prompt": "a", "chosen": "", "rejected": "b"}
    msg, path = problems(tmp_path, [PAIR, bad, PAIR, bad], "pairs")
    assert "2 invalid rows" in msg
    assert f"{path}:2: field 'chosen': empty" in msg and f"{path}:4: field 'chosen': empty" in msg


def test_many_problems_are_capped(tmp_path):
    msg, _ = problems(tmp_path, [{"prompt": "a"}] * 100, "pairs")
    assert "... and" in msg and msg.count("\n") <= 22


def test_missing_file_and_bad_extension(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: data file not found"):
        load_rows(str(tmp_path / "nope.jsonl"), "sft")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unsupported data file extension '.csv'"):
        load_rows(str(tmp_path / "data.csv"), "sft")
    with pytest.raises(DataError, match="not found"):
        fingerprint(str(tmp_path / "nope.jsonl"))


def test_json_must_be_a_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(PAIR))
    with pytest.raises(DataError, match="expected a JSON list"):
        load_rows(str(path), "pairs")


def test_fingerprint_is_content_hash(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [PAIR])
    b = write_jsonl(tmp_path / "b.jsonl", [PAIR])
    c = write_jsonl(tmp_path / "c.jsonl", [PAIR, PAIR])
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    assert len(fingerprint(a)) == 16 and int(fingerprint(a), 16) >= 0


def test_take_fraction_is_seeded_sized_and_ordered():
    rows = [Row("x", i + 1, {"i": i}) for i in range(50)]
    sub = take_fraction(rows, 0.3, seed=7)
    assert len(sub) == 15
    assert sub == take_fraction(rows, 0.3, seed=7)
    assert sub != take_fraction(rows, 0.3, seed=8)
    assert [r.line for r in sub] == sorted(r.line for r in sub)
    assert take_fraction(rows, 1.0, seed=0) == rows
    assert len(take_fraction(rows, 0.001, seed=0)) == 1
    with pytest.raises(SpecError, match="data.fraction"):
        take_fraction(rows, 0.0, seed=0)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl: no rows"):
        load_rows(str(path), "sft")


def test_toy_uri_goes_through_harness_toy(monkeypatch):
    """toy:// rows come from harness.toy (faked here) and are checked like file rows."""
    monkeypatch.setattr(load, "toy_dataset", lambda name: (
        [PAIR, {"prompt": "a", "chosen": "", "rejected": "b"}] if name == "bad" else [PAIR]
    ))
    monkeypatch.setattr(load, "toy_fingerprint", lambda name: f"fp-{name}")
    rows = load_rows("toy://arith-pairs", "pairs")
    assert rows == [Row("toy://arith-pairs", 1, PAIR)]
    assert fingerprint("toy://arith-pairs") == "fp-arith-pairs"
    with pytest.raises(DataError, match="toy://bad:2: field 'chosen': empty"):
        load_rows("toy://bad", "pairs")


# ------------------------------------------------------------------ implicit prompts, KTO, weights

U1, A1 = {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}
U2 = {"role": "user", "content": "and 3+3?"}
GOOD, BAD = {"role": "assistant", "content": "6"}, {"role": "assistant", "content": "7"}


def test_implicit_prompt_is_the_common_message_prefix(tmp_path):
    """HH-RLHF style: the shared first three messages are the prompt; the rest are the responses."""
    hh = {"chosen": [U1, A1, U2, GOOD], "rejected": [U1, A1, U2, BAD], "source": "hh"}
    path = write_jsonl(tmp_path / "hh.jsonl", [PAIR, hh])
    for kind in ("pairs", "kto"):
        rows = load_rows(path, kind)
        assert rows[0].data == PAIR
        assert rows[1].data == {"prompt": [U1, A1, U2], "chosen": [GOOD], "rejected": [BAD], "source": "hh"}
        assert (rows[1].source, rows[1].line) == (path, 2)


def test_identical_implicit_pair_keeps_its_last_turn_as_response(tmp_path):
    """As TRL's extract_prompt: an identical pair still has a response (and is a droppable identical pair)."""
    from harness.data.load import split_implicit_prompt

    assert split_implicit_prompt({"chosen": [U1, A1], "rejected": [U1, A1]}) == {
        "prompt": [U1], "chosen": [A1], "rejected": [A1]}
    # Several assistant turns after the common prefix are allowed.
    two = {"chosen": [U1, A1, GOOD], "rejected": [U1, BAD]}
    assert split_implicit_prompt(two) == {"prompt": [U1], "chosen": [A1, GOOD], "rejected": [BAD]}


def test_pairs_convert_to_kto_rows():
    """chosen -> label true, rejected -> label false, in pair order, keeping source:line; KTO rows pass through."""
    from harness.data.load import pairs_to_kto

    rows = [Row("p.jsonl", 3, {**PAIR, "margin": 1.0}), Row("p.jsonl", 4, KTO)]
    out = pairs_to_kto(rows)
    assert [r.data for r in out] == [
        {"prompt": "2+2=", "completion": "4", "label": True},
        {"prompt": "2+2=", "completion": "5", "label": False},
        KTO,
    ]
    assert [r.line for r in out] == [3, 3, 4]


def test_weights_are_checked_row_by_row():
    from harness.data.load import check_weights

    rows = [Row("w.jsonl", i + 1, {**PC_SFT, **extra}) for i, extra in
            enumerate([{"weight": 0.5}, {"weight": 2}, {}, {"weight": "1"}, {"weight": 0}, {"weight": True},
                       {"weight": float("nan")}, {"w": 1.0}])]
    check_weights(rows[:2], "weight")
    with pytest.raises(DataError) as info:
        check_weights(rows, "weight")
    msg = str(info.value)
    assert "6 invalid rows" in msg
    assert "w.jsonl:3: field 'weight': missing" in msg
    assert "w.jsonl:4: field 'weight': expected a finite number > 0, got '1'" in msg
    for line in (5, 6, 7):
        assert f"w.jsonl:{line}: field 'weight': expected a finite number" in msg
    check_weights(rows[7:], "w")
