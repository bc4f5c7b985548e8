"""harness audit: planted near-duplicates, near-identical pairs and contaminated eval items are found;
clean data is not flagged."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.data.audit import audit_data, length_bias, percentiles
from harness.data.similarity import jaccard, shingles
from harness.data.tokenization import EncodedPair
from harness.errors import DataError
from harness.train.models import tokenizer_only


def words(tag: str, n: int) -> list[str]:
    return [f"{tag}{i}" for i in range(n)]


def clean_rows(n: int = 12) -> list[dict]:
    """Pairs whose every word is unique to the row: no similarity anywhere."""
    return [{"prompt": " ".join(words(f"p{i}x", 8)), "chosen": " ".join(words(f"c{i}x", 4)),
             "rejected": " ".join(words(f"r{i}x", 3))} for i in range(n)]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def tok():
    return tokenizer_only("toy://tiny")


def planted():
    """A row 0 of 11 words (9 trigrams) and its copy with the last word changed: Jaccard 8/10 = 0.8."""
    a = words("a", 11)
    near_copy = {"prompt": " ".join(a[:7]), "chosen": " ".join(a[7:9]), "rejected": " ".join(a[9:10] + ["zulu"])}
    original = {"prompt": " ".join(a[:7]), "chosen": " ".join(a[7:9]), "rejected": " ".join(a[9:11])}
    b = words("b", 11)
    near_identical = {"prompt": "q0 q1 q2", "chosen": " ".join(b), "rejected": " ".join(b[:-1] + ["yankee"])}
    identical = {"prompt": "s0 s1 s2", "chosen": "same answer", "rejected": "same answer"}
    return original, near_copy, near_identical, identical


def test_planted_problems_are_found(tmp_path, tok):
    original, near_copy, near_identical, identical = planted()
    assert jaccard(shingles(" ".join(original.values())), shingles(" ".join(near_copy.values()))) == 0.8
    assert jaccard(shingles(near_identical["chosen"]), shingles(near_identical["rejected"])) == 0.8
    train = clean_rows() + [original, near_copy, near_identical, identical, clean_rows()[3]]
    p = words("p5x", 8)
    held_out = [{"prompt": " ".join(words(f"e{i}x", 8))} for i in range(6)]
    held_out += [{"prompt": clean_rows()[2]["prompt"]},  # verbatim copy of a training prompt
                 {"prompt": " ".join(p + ["extra", "words"])}]  # 6 of 8 trigrams shared: J = 6/8 = 0.75
    assert jaccard(shingles(" ".join(p)), shingles(held_out[-1]["prompt"])) == 0.75
    report = audit_data(write_jsonl(tmp_path / "train.jsonl", train), tok,
                        write_jsonl(tmp_path / "eval.jsonl", held_out), threshold=0.75)
    assert report["rows"] == 17
    assert report["identical_pairs"] == 1 and report["near_identical_pairs"] == 1
    assert report["duplicates"] == 1  # the repeated clean row
    assert report["near_duplicates"] == 2  # the repeated row and the 0.8 near copy
    c = report["contamination"]
    assert (c["eval_rows"], c["contaminated"]) == (8, 2)
    assert [e["eval"].split(":")[-1] for e in c["examples"]] == ["7", "8"]
    assert [e["train"].split(":")[-1] for e in c["examples"]] == ["3", "6"]
    # At 0.81 the 0.8 near copy, the 0.8 near-identical pair and the 0.75 eval item are no longer flagged.
    strict = audit_data(str(tmp_path / "train.jsonl"), tok, str(tmp_path / "eval.jsonl"), threshold=0.81)
    assert (strict["near_duplicates"], strict["near_identical_pairs"], strict["contamination"]["contaminated"]) == (1, 0, 1)


def test_clean_data_is_not_flagged(tmp_path, tok):
    held_out = [{"prompt": " ".join(words(f"e{i}x", 8))} for i in range(6)]
    report = audit_data(write_jsonl(tmp_path / "train.jsonl", clean_rows()), tok,
                        write_jsonl(tmp_path / "eval.jsonl", held_out))
    assert report["identical_pairs"] == report["near_identical_pairs"] == 0
    assert report["duplicates"] == report["near_duplicates"] == report["prefix_mismatch"] == 0
    assert report["contamination"]["contaminated"] == 0


def test_toy_arith_eval_is_not_contaminated_and_verbose_pairs_are_length_biased(tok):
    """All 3000 verbose pairs against all 1000 eval prompts: no contamination; 400 of them tokenized."""
    from harness.data.audit import audit_rows, contamination
    from harness.data.load import load_rows
    from harness.data.tokenization import encode_pairs

    train, held_out = load_rows("toy://verbose-pairs", "pairs"), load_rows("toy://arith-eval", "eval")
    assert contamination(train, held_out, 0.8)["contaminated"] == 0
    assert contamination(train, train[:50], 0.8)["contaminated"] == 50  # and it does find copies
    pairs, stats = encode_pairs(tok, train[:400], max_length=10**9)
    report = audit_rows(train[:400], pairs, stats.prefix_mismatch, 0.8)
    assert report["identical_pairs"] == report["near_identical_pairs"] == report["prefix_mismatch"] == 0
    assert report["length"]["chosen_longer"] == 1.0
    assert report["length"]["chosen_mean"] > 5 * report["length"]["rejected_mean"]


def test_length_bias_and_percentiles_by_hand():
    """Chosen lengths 3, 1, 2 vs rejected 1, 1, 5: chosen longer in 1 of 3, shorter in 1, equal in 1.
    Percentiles of 1, 2, 3, 4 (linear): P50 = 2.5, P90 = 3 + 0.7 = 3.7, P95 = 3.85."""
    pairs = [EncodedPair([0], [1] * c, [2] * r) for c, r in [(3, 1), (1, 1), (2, 5)]]
    bias = length_bias(pairs)
    assert bias["chosen_mean"] == 2.0 and bias["rejected_mean"] == pytest.approx(7 / 3)
    assert bias["chosen_longer"] == bias["rejected_longer"] == bias["equal"] == pytest.approx(1 / 3)
    assert percentiles([4, 1, 3, 2]) == pytest.approx({"p50": 2.5, "p90": 3.7, "p95": 3.85, "max": 4.0})


def test_cli_prints_a_table_and_json(tmp_path, capsys):
    original, near_copy, _, identical = planted()
    path = write_jsonl(tmp_path / "train.jsonl", clean_rows() + [original, near_copy, identical])
    assert main(["audit", path]) == 0
    table = capsys.readouterr().out
    assert "identical pairs" in table and "near-duplicate rows (J >= 0.8, incl. exact)  1" in table
    assert "prompt tokens P50 / P90 / P95 / max" in table
    assert main(["audit", path, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["identical_pairs"] == 1 and report["rows"] == 15
    assert main(["audit", str(tmp_path / "nope.jsonl")]) == 2
    assert "data file not found" in capsys.readouterr().err


def test_alpacaeval_and_fastchat_prompt_files_are_audited_as_eval_prompts(tmp_path, tok):
    """AlpacaEval's JSON list ({instruction, ...}) and FastChat's question.jsonl ({question_id, turns})."""
    train = write_jsonl(tmp_path / "train.jsonl", clean_rows())
    copied = clean_rows()[2]["prompt"]
    alpaca = tmp_path / "alpaca_eval.json"
    alpaca.write_text(json.dumps([{"instruction": " ".join(words("e0x", 8)), "dataset": "helpful_base"},
                                  {"instruction": copied, "dataset": "oasst", "output": "x", "generator": "g"}]))
    report = audit_data(train, tok, str(alpaca))
    assert (report["contamination"]["eval_rows"], report["contamination"]["contaminated"]) == (2, 1)
    assert report["contamination"]["examples"][0]["eval"] == f"{alpaca}:2"
    fastchat = write_jsonl(tmp_path / "question.jsonl", [
        {"question_id": 81, "category": "writing", "turns": [copied, "Now shorten it."]},
        {"question_id": 82, "category": "math", "turns": [" ".join(words("e1x", 8)), "And again."]}])
    report = audit_data(train, tok, fastchat, threshold=0.5)
    assert (report["contamination"]["eval_rows"], report["contamination"]["contaminated"]) == (2, 1)


def test_an_eval_file_of_no_known_format_keeps_the_eval_error(tmp_path, tok):
    train = write_jsonl(tmp_path / "train.jsonl", clean_rows())
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"question": "no prompt field here"}])
    with pytest.raises(DataError, match="odd.jsonl:1"):
        audit_data(train, tok, odd)
