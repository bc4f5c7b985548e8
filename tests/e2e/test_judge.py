"""Judging end to end against the real embedded toy judge (a local HTTP server behind the openai client).

The toy judge is a rubric over the toy world's ground truth: for arithmetic it
prefers the correct answer, so the verdicts below are known in advance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.toy import toy_dataset

PAIRWISE_KEYS = ["generator", "n", "wins", "ties", "losses", "errors", "win_rate", "position_consistency",
                 "first_position_rate"]


def outputs_file(path: Path, generator: str, right: set[int], n: int = 6) -> Path:
    rows = []
    for i, item in enumerate(toy_dataset("arith-eval")[:n]):
        answer = item["answer"] if i in right else str(int(item["answer"]) + 1)
        rows.append({"instruction": item["prompt"][0]["content"], "output": answer, "generator": generator})
    path.write_text("\n".join(json.dumps(r) for r in rows) if path.suffix == ".jsonl" else json.dumps(rows))
    return path


def test_pairwise_json_shape_and_counts(tmp_path, capsys):
    # Candidate right on 0-3, baseline right on 0-1: prompts 0-1 tie (both right), 2-3 are wins,
    # 4-5 tie (both wrong).  Both orders agree on every prompt (an unbiased rubric judge).
    cand = outputs_file(tmp_path / "cand.jsonl", "cand", {0, 1, 2, 3})
    base = outputs_file(tmp_path / "base.json", "base", {0, 1})
    code = main(["judge", "--outputs", str(cand), "--baseline", str(base), "--suite", "pairwise",
                 "--format", "json", "--no-track", "--results-dir", str(tmp_path / "results")])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and list(rows[0]) == PAIRWISE_KEYS
    row = rows[0]
    assert (row["generator"], row["n"], row["wins"], row["ties"], row["losses"], row["errors"]) == \
        ("cand", 6, 2, 4, 0, 0)
    assert row["wins"] + row["ties"] + row["losses"] + row["errors"] == row["n"]
    assert row["win_rate"] == (2 + 4 / 2) / 6
    assert row["position_consistency"] == 1.0
    # Verdicts naming a position: the 2 wins in each order, A in candidate-first, B in baseline-first;
    # the 8 tie verdicts name neither and are left out (issue 13 item 5; it read 2 / 12 before).
    assert row["first_position_rate"] == 2 / (2 + 2)
    assert not (tmp_path / "results" / "mlflow.db").exists()


def test_pairwise_ranking_of_several_generators(tmp_path, capsys):
    """Two generators against one baseline: the Bradley-Terry/Elo table ranks them by their verdicts.

    Known verdicts (unbiased rubric judge, both orders agree): "strong" (right on 0-3) scores
    [.5, .5, 1, 1, .5, .5] against the baseline (right on 0-1), "weak" (right on 0-2) scores
    [.5, .5, 1, .5, .5, .5].  The logged ratings must be bt_ratings of exactly those comparisons.
    """
    from judges.stats.rankings import Comparison, bt_ratings

    strong = outputs_file(tmp_path / "strong.jsonl", "strong", {0, 1, 2, 3})
    weak = outputs_file(tmp_path / "weak.jsonl", "weak", {0, 1, 2})
    base = outputs_file(tmp_path / "base.json", "base", {0, 1})
    results_dir = tmp_path / "results"
    code = main(["judge", "--outputs", str(strong), str(weak), "--baseline", str(base), "--suite", "pairwise",
                 "--results-dir", str(results_dir)])
    assert code == 0
    out = capsys.readouterr().out
    assert "[pairwise ranking: Bradley-Terry" in out
    scores = {"strong": [.5, .5, 1, 1, .5, .5], "weak": [.5, .5, 1, .5, .5, .5]}
    expected = {r.model: r for r in bt_ratings(
        [Comparison(g, "baseline", s) for g, ss in scores.items() for s in ss], elo=True)}
    assert expected["strong"].score > expected["weak"].score > expected["baseline"].score
    ranking = [line.split()[0] for line in out.split("[pairwise ranking")[1].splitlines()[2:] if line.strip()]
    assert ranking == ["strong", "weak", "baseline"]
    client = MlflowClient(f"sqlite:///{results_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("judge").experiment_id])
    logged = {r.data.tags["harness.generator"]: r.data.metrics for r in runs}
    for generator in scores:
        assert logged[generator]["eval/pairwise/elo"] == pytest.approx(expected[generator].score, rel=1e-9)
        assert logged[generator]["eval/pairwise/elo_ci_low"] <= logged[generator]["eval/pairwise/elo"]
        # The style-controlled rating (issue 13) is logged and shown beside the plain one.
        assert "eval/pairwise/elo_style" in logged[generator] and "eval/pairwise/style_coef/length" in logged[generator]
    assert "elo_style" in out.split("[pairwise ranking")[1]


def test_annotations_rescored_in_percent(tmp_path, capsys):
    prefs = [2, 1, 1.5, 2.0, None, 0]  # 0 is a tie, as in AlpacaEval; None has no valid preference
    rows = [{"instruction": f"q{i}", "output_1": "aa", "generator_1": "base", "output_2": "bb",
             "generator_2": "m", "preference": p} for i, p in enumerate(prefs)]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(rows))
    assert main(["judge", "--annotations", str(path), "--format", "json", "--no-track"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    # Valid labels (preference - 1, tie 0.5): 1, 0, 0.5, 1, 0.5 -> mean 0.6.
    # Deviations .4 -.6 -.1 .4 -.1: squares sum 0.7, sample variance 0.175, SE = sqrt(0.175 / 5).
    assert (row["generator"], row["n"], row["errors"]) == ("m", 6, 1)
    assert abs(row["win_rate"] - 60.0) < 1e-9
    assert abs(row["standard_error"] - 100 * (0.175 / 5) ** 0.5) < 1e-9
    # Equal lengths: the length term vanishes and the one-model LC fit is the intercept's MLE, the mean.
    assert abs(row["lc_win_rate"] - 60.0) < 1e-4


def test_annotations_leaderboard_csv_has_alpacaevals_columns(tmp_path, capsys):
    """--leaderboard CSV: AlpacaEval's columns, the model as the unnamed index, the JSON's numbers."""
    import pandas as pd

    rows = [{"instruction": f"q{i}", "output_1": "a" * 10, "generator_1": "base", "output_2": "b" * (4 + i),
             "generator_2": name, "preference": p}
            for name, prefs in (("m", [2, 1, 2, 2]), ("k", [1, 1, 2, 1])) for i, p in enumerate(prefs)]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(rows))
    csv = tmp_path / "leaderboard.csv"
    assert main(["judge", "--annotations", str(path), "--format", "json", "--no-track", "--leaderboard", str(csv)]) == 0
    scored = {r["generator"]: r for r in json.loads(capsys.readouterr().out)}
    board = pd.read_csv(csv, index_col=0)
    assert list(board.columns) == ["win_rate", "standard_error", "n_total", "avg_length",
                                   "length_controlled_winrate", "lc_standard_error"]
    assert csv.read_text().startswith(",win_rate,")  # the unnamed index column, as AlpacaEval writes it
    assert list(board.index) == sorted(scored, key=lambda g: -scored[g]["lc_win_rate"])
    for name in ("m", "k"):
        assert board.loc[name, "win_rate"] == pytest.approx(scored[name]["win_rate"], rel=1e-5)
        assert board.loc[name, "length_controlled_winrate"] == pytest.approx(scored[name]["lc_win_rate"], rel=1e-5)
        assert board.loc[name, "n_total"] == 4 and board.loc[name, "avg_length"] == (4 + 5 + 6 + 7) / 4
    assert board.loc["m", "win_rate"] == pytest.approx(75.0)


def test_alpaca_suite_leaderboard_and_its_refusal_elsewhere(tmp_path, capsys):
    import pandas as pd

    cand = outputs_file(tmp_path / "cand.jsonl", "cand", {0, 1, 2, 3})
    base = outputs_file(tmp_path / "base.json", "base", {0, 1})
    csv = tmp_path / "lb.csv"
    common = ["--outputs", str(cand), "--baseline", str(base), "--format", "json", "--no-track",
              "--results-dir", str(tmp_path / "results"), "--leaderboard", str(csv)]
    assert main(["judge", *common, "--suite", "alpaca"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    board = pd.read_csv(csv, index_col=0)
    assert board.loc["cand", "win_rate"] == pytest.approx(100 * row["win_rate"], rel=1e-5)
    lengths = [len(json.loads(line)["output"]) for line in cand.read_text().splitlines()]
    assert board.loc["cand", "n_total"] == 6 and board.loc["cand", "avg_length"] == pytest.approx(sum(lengths) / 6)
    assert main(["judge", *common, "--suite", "pairwise"]) == 2
    assert "--leaderboard: AlpacaEval's leaderboard columns come from the alpaca suite" in capsys.readouterr().err


def sweep_spec(tmp_path: Path) -> Path:
    spec = {
        "name": "judged", "results_dir": str(tmp_path / "results"), "model": "toy://micro",
        "method": {"name": "sft"}, "data": {"train": "toy://arith-sft", "fraction": 0.01},
        "train": {"batch_size": 4, "max_length": 64, "max_steps": 2, "lr": 1e-2},
        "eval": {"suites": ["arith", "pairwise"], "include_base": True, "generation": {"max_new_tokens": 4},
                 "arith": {"limit": 4}, "pairwise": {"limit": 4, "baseline": "base"}},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sweep_with_arith_and_pairwise(tmp_path):
    assert main(["sweep", str(sweep_spec(tmp_path))]) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("judged")
    trials = {r.data.tags["harness.trial_id"]: r for r in client.search_runs([exp.experiment_id])
              if "harness.trial_id" in r.data.tags}
    assert len(trials) == 2
    base = trials.pop("base")
    [trained] = trials.values()
    for run in (base, trained):
        m = run.data.metrics
        for suite in ("arith", "pairwise"):
            assert f"eval/{suite}/response_length" in m and f"eval/{suite}/kl" in m
        assert m["eval/pairwise/n"] == 4
        assert m["eval/pairwise/wins"] + m["eval/pairwise/ties"] + m["eval/pairwise/losses"] \
            + m["eval/pairwise/errors"] == 4
        assert 0 <= m["eval/pairwise/win_rate"] <= 1
        assert run.data.tags["harness.kl_estimator"] == "k1"
    # The base model against its own outputs: every prompt a tie, and it is its own reference.
    assert base.data.metrics["eval/pairwise/win_rate"] == 0.5
    assert base.data.metrics["eval/pairwise/kl"] == 0.0
    assert trained.data.metrics["eval/pairwise/kl"] != 0.0  # lr 1e-2 moved the policy off the reference
    run_id = trained.info.run_id
    assert {a.path for a in client.list_artifacts(run_id, "judgments")} == \
        {"judgments/arith.jsonl", "judgments/pairwise.jsonl"}
    local = Path(client.download_artifacts(run_id, "judgments/pairwise.jsonl", str(tmp_path)))
    judged = [json.loads(line) for line in local.read_text().splitlines()]
    assert len(judged) == 4
    assert all(set(j["judge_text"]) == {"candidate_first", "baseline_first"} for j in judged)
    assert all(isinstance(t, str) and t for j in judged for t in j["judge_text"].values())
    local = Path(client.download_artifacts(run_id, "outputs/pairwise.jsonl", str(tmp_path)))
    outputs = [json.loads(line) for line in local.read_text().splitlines()]
    assert [o["generator"] for o in outputs] == [trained.data.tags["harness.trial_id"]] * 4
    assert all(o["generation"]["max_new_tokens"] == 4 for o in outputs)


def test_mtbench_on_chat_eval_generates_both_turns(tmp_path, capsys):
    code = main(["judge", "--model", "toy://micro", "--suite", "mtbench", "--set", "eval.mtbench.mode=single",
                 "--set", "eval.mtbench.limit=3", "--set", "eval.generation.max_new_tokens=4",
                 "--format", "json", "--results-dir", str(tmp_path / "results")])
    assert code == 0
    [row] = json.loads(capsys.readouterr().out)
    # Each turn is judged (issue 13 item 4): n counts the 3 x 2 (question, turn) judgments.
    assert row["generator"] == "toy://micro" and row["n"] == 6 and row["errors"] == 0
    assert row["turn1/n"] == row["turn2/n"] == 3
    assert row["mean_score"] == pytest.approx((row["turn1/mean_score"] + row["turn2/mean_score"]) / 2)
    assert 1 <= row["mean_score"] <= 10
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("judge").experiment_id])
    assert run.data.metrics["eval/mtbench/mean_score"] == row["mean_score"]
    assert run.data.metrics["eval/mtbench/judge_calls"] >= 3
    local = Path(client.download_artifacts(run.info.run_id, "outputs/mtbench.jsonl", str(tmp_path)))
    outputs = [json.loads(line) for line in local.read_text().splitlines()]
    assert [len(o["turns"]) for o in outputs] == [2, 2, 2]
    assert all(isinstance(o["output"], list) and len(o["output"]) == 2 for o in outputs)


def test_sweep_pairwise_against_another_trial(tmp_path):
    """eval.pairwise.baseline: TRIAL_ID: that trial runs first; the other is judged against its outputs."""
    from harness.config.grid import expand_trials
    from harness.config.spec import load_spec
    from harness.data.load import fingerprint

    path = sweep_spec(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["eval"] = {"suites": ["pairwise", "alpaca"], "generation": {"max_new_tokens": 4},
                    "pairwise": {"limit": 3}, "alpaca": {"limit": 3}}
    spec["ablate"] = {"train.lr": [1e-2, 1e-4]}
    path.write_text(yaml.safe_dump(spec))
    spec["eval"]["pairwise"]["baseline"] = "lr0.0001-seed0"  # a trial's name: its id without the hash
    path.write_text(yaml.safe_dump(spec))
    trials = expand_trials(load_spec(path), fingerprint)
    baseline_id = trials[1].id  # lr 1e-4, listed second
    assert baseline_id.startswith("lr0.0001-seed0-")
    assert main(["sweep", str(path)]) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("judged")
    runs = {r.data.tags["harness.trial_id"]: r for r in client.search_runs([exp.experiment_id])
            if "harness.trial_id" in r.data.tags}
    assert set(runs) == {t.id for t in trials}
    base_run, other = runs[baseline_id], runs[trials[0].id]
    assert base_run.info.start_time < other.info.start_time  # the baseline trial ran first
    assert base_run.data.metrics["eval/pairwise/win_rate"] == 0.5  # against its own outputs: all ties
    assert base_run.data.metrics["eval/pairwise/ties"] == 3
    m = other.data.metrics
    assert m["eval/pairwise/wins"] + m["eval/pairwise/ties"] + m["eval/pairwise/losses"] + m["eval/pairwise/errors"] == 3
    # alpaca against `base` on both trials: the LC GLM is refitted jointly over the two, from their judgments.
    from judges.alpaca import as_annotations
    from judges.stats.annotations import score_annotations

    rows = []
    for i, run in enumerate((base_run, other)):
        local = Path(client.download_artifacts(run.info.run_id, "judgments/alpaca.jsonl", str(tmp_path / str(i))))
        rows += [json.loads(line) for line in local.read_text().splitlines()]
    assert {r["generator_1"] for r in rows} == {"base"} and len(rows) == 6
    joint = {r["generator"]: r for r in score_annotations(as_annotations(rows))}
    for trial_id, run in runs.items():
        metrics = client.get_run(run.info.run_id).data.metrics
        assert metrics["eval/alpaca/lc_joint_models"] == 2
        assert abs(metrics["eval/alpaca/lc_win_rate_joint"] - joint[trial_id]["lc_win_rate"] / 100) < 1e-9


def test_mtbench_outputs_matched_by_first_turn(tmp_path, capsys):
    """Two-turn answers from a file: right answers (the chats' references) grade above wrong ones."""
    chats = toy_dataset("chat-eval")[:3]
    rows = [{"instruction": c["turns"][0], "output": list(c["reference"]), "generator": "right"} for c in chats]
    rows += [{"instruction": c["turns"][0], "output": [str(int(r) + 3) for r in c["reference"]],
              "generator": "wrong"} for c in chats]
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    args = ["judge", "--outputs", str(path), "--suite", "mtbench", "--set", "eval.mtbench.mode=single",
            "--format", "json", "--no-track", "--results-dir", str(tmp_path / "results")]
    assert main(args) == 0
    scores = {r["generator"]: r for r in json.loads(capsys.readouterr().out)}
    assert scores["right"]["n"] == scores["wrong"]["n"] == 6  # 3 questions x 2 turns
    assert scores["right"]["mean_score"] > scores["wrong"]["mean_score"]
    assert scores["right"]["turn2/mean_score"] == 10 and scores["wrong"]["turn1/mean_score"] == 1
    rows[0]["output"] = "only one answer"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(args) == 2
    assert f"{path}:1: field 'output': question chat-000000 has 2 turns" in capsys.readouterr().err


def test_alpaca_lc_is_fitted_jointly_over_generators(tmp_path, capsys):
    """Two generators against one baseline: each gets the joint LC fit over both (from its judgments)."""
    from judges.alpaca import as_annotations
    from judges.stats.annotations import score_annotations

    a = json.loads(outputs_file(tmp_path / "a.json", "a", {0, 1, 2, 3}).read_text())
    b = json.loads(outputs_file(tmp_path / "b.json", "b", {0}).read_text())
    both = tmp_path / "both.json"
    both.write_text(json.dumps(a + b))
    base = outputs_file(tmp_path / "base.json", "base", {0, 1})
    assert main(["judge", "--outputs", str(both), "--baseline", str(base), "--suite", "alpaca", "--format", "json",
                 "--results-dir", str(tmp_path / "results")]) == 0
    rows = {r["generator"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"a", "b"} and all(r["lc_joint_models"] == 2 for r in rows.values())
    assert rows["a"]["win_rate"] > rows["b"]["win_rate"]  # a is right more often than b
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("judge").experiment_id])
    judged = []
    for run in runs:
        local = client.download_artifacts(run.info.run_id, "judgments/alpaca.jsonl", str(tmp_path / run.info.run_id))
        judged += [json.loads(line) for line in Path(local).read_text().splitlines()]
    joint = {r["generator"]: r for r in score_annotations(as_annotations(judged))}
    for name in ("a", "b"):
        assert abs(rows[name]["lc_win_rate"] - joint[name]["lc_win_rate"] / 100) < 1e-9
        # AlpacaEval's v1 GLM with the joint fit's γ as instruction difficulty, beside it.
        assert abs(rows[name]["lc_win_rate_v1"] - joint[name]["lc_win_rate_v1"] / 100) < 1e-9


def test_annotations_with_instruction_difficulty(tmp_path, capsys):
    """--instruction-difficulty FILE: the JSON row gains lc_win_rate_v1, AlpacaEval's per-model v1 GLM with
    that difficulty (fit_lc_v1 recomputed here); the option is refused without --annotations."""
    from judges.stats.lc_v1 import fit_lc_v1

    prefs = [2, 1, 1.5, 1.9, 1.2, 1.7]
    rows = [{"instruction": f"q{i}", "output_1": "a" * (10 + 3 * i), "generator_1": "base",
             "output_2": "b" * (20 - 2 * i), "generator_2": "m", "preference": p} for i, p in enumerate(prefs)]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(rows))
    difficulty = [0.5, -1.0, 0.0, 2.0, -0.5, 1.0]
    csv = tmp_path / "instruction_difficulty.csv"
    csv.write_text("index,instruction_difficulty\n" + "".join(f"{k},{v}\n" for k, v in enumerate(difficulty)))
    assert main(["judge", "--annotations", str(path), "--instruction-difficulty", str(csv), "--format", "json",
                 "--no-track"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    expected, _ = fit_lc_v1([len(r["output_2"]) - len(r["output_1"]) for r in rows], difficulty,
                            [p - 1 for p in prefs])
    assert row["lc_win_rate_v1"] == pytest.approx(100 * expected)
    out_file = tmp_path / "o.json"
    out_file.write_text(json.dumps([{"instruction": "q", "output": "x", "generator": "m"}]))
    assert main(["judge", "--outputs", str(out_file), "--baseline", str(out_file), "--instruction-difficulty",
                 str(csv), "--no-track"]) == 2
    assert "--instruction-difficulty applies to --annotations" in capsys.readouterr().err


def test_report_on_a_judged_suite_with_several_samples(tmp_path, capsys):
    """Issue 13 item 3: `eval.generation.n=2` on a judged suite gives two judgments rows per prompt (one per
    sample, with its index); `harness report` aborted with "duplicate prompt id", now pairs on the
    per-prompt mean over samples."""
    results = str(tmp_path / "results")
    assert main(["judge", "--model", "toy://micro", "--suite", "single", "--set", "eval.generation.n=2",
                 "--set", "eval.generation.temperature=1.0", "--set", "eval.single.limit=4",
                 "--set", "eval.single.data=toy://arith-eval", "--set", "eval.generation.max_new_tokens=4",
                 "--format", "json", "--results-dir", results]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["n"] == 8 and "mean_score_se" in row
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("judge").experiment_id])
    local = Path(client.download_artifacts(run.info.run_id, "judgments/single.jsonl", str(tmp_path)))
    rows = [json.loads(line) for line in local.read_text().splitlines()]
    assert sorted((r["id"], r["sample"]) for r in rows) == sorted({(r["id"], s) for r in rows for s in (0, 1)})
    assert main(["report", "judge", "--results-dir", results, "--out", str(tmp_path / "report"),
                 "--format", "md"]) == 0
    assert "single" in (tmp_path / "report" / "report.md").read_text()


def test_report_of_judge_only_runs_keeps_bookkeeping_out_of_the_main_tables(tmp_path, capsys):
    """Issue 18: a judge-only experiment's Runs table listed ~25 columns, most of them judge counters,
    counts and the style fit's coefficients.  The Runs and per-model tables now hold the outcomes (the rule
    the sweep's per-axis tables use, ``outcome_metrics``); the rest is in "Counts and judge bookkeeping"
    and in runs.csv."""
    results = str(tmp_path / "results")
    strong = outputs_file(tmp_path / "strong.jsonl", "strong", {0, 1, 2, 3})
    weak = outputs_file(tmp_path / "weak.jsonl", "weak", {0, 1, 2})
    base = outputs_file(tmp_path / "base.json", "base", {0, 1})
    assert main(["judge", "--outputs", str(strong), str(weak), "--baseline", str(base), "--suite", "pairwise",
                 "--results-dir", results]) == 0
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["report", "judge", "--results-dir", results, "--out", str(out), "--format", "all"]) == 0
    md = capsys.readouterr().out
    sections = {s.split("\n", 1)[0]: s for s in md.split("\n## ")[1:]}
    bookkeeping = ("judge_calls", "judge_cache_hits", "judge_prompt_tokens", "style_coef/length",
                   "/wins |", "/n |", "/errors |")
    for title in ("Runs", "judge: model"):
        header = sections[title].split("\n| ", 1)[1].split("\n", 1)[0]
        assert "eval/pairwise/win_rate" in header and "eval/pairwise/position_consistency" in header
        assert not any(b in "| " + header for b in bookkeeping), header
        assert header.count("|") <= 13  # run/model + a dozen outcomes, not ~25 columns
    counts = sections["Counts and judge bookkeeping"]
    assert all(b.strip(" |") in counts for b in bookkeeping)
    runs = pd.read_csv(out / "runs.csv")
    assert {"eval/pairwise/judge_calls", "eval/pairwise/wins", "eval/pairwise/win_rate"} <= set(runs.columns)
    assert runs.set_index("run").loc["strong", "eval/pairwise/wins"] == 2
