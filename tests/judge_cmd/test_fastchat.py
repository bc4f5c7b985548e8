"""``harness judge --fastchat-judgments DIR``: FastChat's model_judgment files, read back as FastChat does.

The aggregation below is FastChat's ``show_result.py`` (llm_judge), re-implemented here with
pandas from its published logic, not from harness code:

- single (``display_result_single``): drop rows with score -1, then the mean score per model
  over turn 1, over turn 2, and over all rows ("average");
- pairwise (``display_result_pairwise``): drop rows where either game is an ``error``; a row
  whose game-1 winner is ``tie`` or differs from game 2's is a tie for both models, otherwise a
  win for the winner and a loss for the other; per model, ``win_rate_adjusted`` =
  (win + 0.5 tie) / (win + loss + tie), the baseline left out.

Those must equal what harness prints (``mean_score``, ``turn<t>/mean_score``; ``win_rate``,
``wins``, ``ties``, ``losses``).  The judge is the embedded toy judge on toy-world chats, whose
verdicts follow the chats' reference answers, so the scores vary.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.toy import toy_dataset

SINGLE_FIELDS = ["question_id", "model", "judge", "user_prompt", "judgment", "score", "turn", "tstamp"]
PAIR_FIELDS = ["question_id", "model_1", "model_2", "g1_winner", "g2_winner", "judge", "g1_user_prompt",
               "g1_judgment", "g2_user_prompt", "g2_judgment", "turn", "tstamp"]
RIGHT_TURNS = {"right": (True, True), "wrong": (False, False), "first": (True, False), "second": (False, True)}


def _answers(path: Path, generators: dict[str, tuple[bool, bool]], n: int = 4) -> Path:
    """Two-turn answers to the first n toy chats: each turn right (the reference) or off by 3."""
    rows = []
    for name, right in generators.items():
        for i, chat in enumerate(toy_dataset("chat-eval")[:n]):
            ok = right if i % 2 == 0 else (not right[0], right[1])  # vary by question too
            answers = [ref if good else str(int(ref) + 3) for ref, good in zip(chat["reference"], ok)]
            rows.append({"id": chat["id"], "instruction": chat["turns"][0], "output": answers, "generator": name})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _judge(tmp_path, *args) -> int:
    return main(["judge", "--suite", "mtbench", "--format", "json", "--no-track",
                 "--results-dir", str(tmp_path / "results"), *args])


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def show_result_single(path: Path) -> pd.DataFrame:
    df = pd.read_json(path, lines=True)[["model", "score", "turn"]]
    df = df[df["score"] != -1]
    return pd.DataFrame({"turn1": df[df["turn"] == 1].groupby("model")["score"].mean(),
                         "turn2": df[df["turn"] == 2].groupby("model")["score"].mean(),
                         "average": df.groupby("model")["score"].mean()})


def show_result_pairwise(path: Path, baseline: str) -> pd.DataFrame:
    df = pd.read_json(path, lines=True)
    df = df[(df["g1_winner"] != "error") & (df["g2_winner"] != "error")]
    results = []
    for _, row in df.iterrows():
        if row["g1_winner"] == "tie" or row["g1_winner"] != row["g2_winner"]:
            results += [{"model": row["model_1"], "win": 0, "loss": 0, "tie": 1},
                        {"model": row["model_2"], "win": 0, "loss": 0, "tie": 1}]
        else:
            winner, loser = ((row["model_1"], row["model_2"]) if row["g1_winner"] == "model_1"
                             else (row["model_2"], row["model_1"]))
            results += [{"model": winner, "win": 1, "loss": 0, "tie": 0},
                        {"model": loser, "win": 0, "loss": 1, "tie": 0}]
    out = pd.DataFrame(results).groupby("model").sum()
    out = out[out.index != baseline]
    total = out["win"] + out["loss"] + out["tie"]
    out["win_rate_adjusted"] = (out["win"] + 0.5 * out["tie"]) / total
    return out


def test_single_judgments_aggregate_as_show_result_reads_them(tmp_path, capsys):
    answers = _answers(tmp_path / "answers.jsonl", RIGHT_TURNS)
    fastchat = tmp_path / "data" / "mt_bench"
    assert _judge(tmp_path, "--outputs", str(answers), "--set", "eval.mtbench.mode=single",
                  "--fastchat-judgments", str(fastchat)) == 0
    captured = capsys.readouterr()
    printed = {r["generator"]: r for r in json.loads(captured.out)}
    [path] = (fastchat / "model_judgment").glob("*_single.jsonl")
    assert f"FastChat judgments: {path} (32 rows)" in captured.err  # 4 generators x 4 questions x 2 turns
    rows = _read(path)
    assert all(list(r) == SINGLE_FIELDS for r in rows)
    first = rows[0]
    assert isinstance(first["judge"], list) and len(first["judge"]) == 2
    assert path.name == f"{first['judge'][0]}_single.jsonl"
    assert first["question_id"] == 1 and first["turn"] == 1 and "What is 99-23?" in first["user_prompt"]
    turn2 = next(r for r in rows if r["question_id"] == 1 and r["turn"] == 2 and r["model"] == first["model"])
    assert "What is 99-23?" in turn2["user_prompt"] and "Now add 1 to that." in turn2["user_prompt"]
    assert all(isinstance(r["judgment"], str) and r["judgment"] for r in rows)
    fastchat_view = show_result_single(path)
    assert set(fastchat_view.index) == set(printed)
    for model, row in fastchat_view.iterrows():
        assert row["average"] == pytest.approx(printed[model]["mean_score"], abs=1e-12)
        assert row["turn1"] == pytest.approx(printed[model]["turn1/mean_score"], abs=1e-12)
        assert row["turn2"] == pytest.approx(printed[model]["turn2/mean_score"], abs=1e-12)
    assert fastchat_view.loc["right", "average"] > fastchat_view.loc["wrong", "average"]
    # A second run replaces its models' rows instead of doubling them; other models' rows stay.
    only = _answers(tmp_path / "one.jsonl", {"right": RIGHT_TURNS["right"]})
    assert _judge(tmp_path, "--outputs", str(only), "--set", "eval.mtbench.mode=single",
                  "--fastchat-judgments", str(fastchat)) == 0
    again = _read(path)
    assert len(again) == 32 and sorted(r["model"] for r in again) == sorted(r["model"] for r in rows)


def test_pairwise_judgments_aggregate_as_show_result_reads_them(tmp_path, capsys):
    answers = _answers(tmp_path / "answers.jsonl", {k: v for k, v in RIGHT_TURNS.items() if k != "first"})
    baseline = _answers(tmp_path / "baseline.jsonl", {"first": RIGHT_TURNS["first"]})
    fastchat = tmp_path / "mt_bench"
    assert _judge(tmp_path, "--outputs", str(answers), "--baseline", str(baseline),
                  "--fastchat-judgments", str(fastchat)) == 0
    printed = {r["generator"]: r for r in json.loads(capsys.readouterr().out)}
    [path] = (fastchat / "model_judgment").glob("*_pair.jsonl")
    rows = _read(path)
    assert len(rows) == 3 * 4 * 2 and all(list(r) == PAIR_FIELDS for r in rows)
    assert {r["model_2"] for r in rows} == {"first"} and {r["model_1"] for r in rows} == set(printed)
    assert {r["g1_winner"] for r in rows} | {r["g2_winner"] for r in rows} <= {"model_1", "model_2", "tie", "error"}
    # The two games swap A and B (the prompts are equal only where the two answers are).
    assert sum(r["g1_user_prompt"] != r["g2_user_prompt"] for r in rows) >= len(rows) // 2
    fastchat_view = show_result_pairwise(path, "first")
    assert set(fastchat_view.index) == set(printed)
    for model, row in fastchat_view.iterrows():
        assert row["win_rate_adjusted"] == pytest.approx(printed[model]["win_rate"], abs=1e-12)
        assert (row["win"], row["tie"], row["loss"]) == \
            (printed[model]["wins"], printed[model]["ties"], printed[model]["losses"])
    assert fastchat_view.loc["right", "win"] > 0 and fastchat_view.loc["wrong", "loss"] > 0


def test_fastchat_judgments_need_the_mtbench_suite(tmp_path, capsys):
    answers = _answers(tmp_path / "answers.jsonl", {"right": RIGHT_TURNS["right"]})
    assert main(["judge", "--outputs", str(answers), "--suite", "single", "--fastchat-judgments",
                 str(tmp_path / "fc"), "--no-track", "--results-dir", str(tmp_path / "results")]) == 2
    assert "--fastchat-judgments: FastChat's model_judgment files hold MT-Bench judgments; add --suite mtbench" \
        in capsys.readouterr().err
    assert not (tmp_path / "fc").exists()
