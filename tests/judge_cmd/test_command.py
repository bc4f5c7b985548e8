"""`harness judge` end to end through the CLI: readers, matching, JSON shapes, MLflow logging."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.toy import toy_dataset


def arith_outputs(tmp_path: Path, n: int = 4, wrong: tuple[int, ...] = (3,), name: str = "arith.json") -> Path:
    rows = []
    for i, item in enumerate(toy_dataset("arith-eval")[:n]):
        answer = int(item["answer"]) + (1 if i in wrong else 0)
        rows.append({"instruction": item["prompt"][0]["content"], "output": f"The answer is {answer}",
                     "generator": "m1"})
    path = tmp_path / name
    path.write_text(json.dumps(rows))
    return path


def judge(tmp_path: Path, *args: str) -> int:
    return main(["judge", *args, "--results-dir", str(tmp_path / "results")])


def test_arith_outputs_matched_by_instruction_json_only_on_stdout(tmp_path, capsys):
    path = arith_outputs(tmp_path)
    assert judge(tmp_path, "--outputs", str(path), "--suite", "arith", "--format", "json", "--no-track") == 0
    out = json.loads(capsys.readouterr().out)  # stdout parses as JSON: nothing else was printed there
    # 3 of 4 right: pass@1 = 0.75; per-item values 1,1,1,0 have sample variance 0.25, SE = sqrt(0.25/4).
    assert out == [{"generator": "m1", "num_prompts": 4, "pass_at_1": 0.75, "pass_at_1_se": 0.25,
                    "response_length": out[0]["response_length"]}]
    assert out[0]["response_length"] == sum(len(r["output"]) for r in json.loads(path.read_text())) / 4
    assert not (tmp_path / "results" / "mlflow.db").exists()  # --no-track: no store, no run


def test_unmatched_output_rows_are_an_error(tmp_path, capsys):
    path = arith_outputs(tmp_path)
    rows = json.loads(path.read_text()) + [{"instruction": "What is 1000+1?", "output": "1001", "generator": "m1"}]
    path.write_text(json.dumps(rows))
    assert judge(tmp_path, "--outputs", str(path), "--suite", "arith", "--no-track") == 2
    err = capsys.readouterr().err
    assert "1 row(s) match no prompt of the arith suite's data" in err
    assert f"{path}[4]: id=None instruction='What is 1000+1?'" in err


def test_results_are_logged_one_run_per_generator(tmp_path, capsys):
    path = arith_outputs(tmp_path)
    other = json.loads(arith_outputs(tmp_path, wrong=(0, 1), name="b.json").read_text())
    path.write_text(json.dumps(json.loads(path.read_text()) + [{**r, "generator": "m2"} for r in other]))
    assert judge(tmp_path, "--outputs", str(path), "--suite", "arith", "--experiment", "mine") == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mine")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"m1", "m2"}
    assert runs["m1"].data.metrics["eval/arith/pass_at_1"] == 0.75
    assert runs["m2"].data.metrics["eval/arith/pass_at_1"] == 0.5
    assert runs["m1"].data.tags["harness.role"] == "judge" and runs["m1"].info.status == "FINISHED"
    run_id = runs["m2"].info.run_id
    local = client.download_artifacts(run_id, "judgments/arith.jsonl", str(tmp_path))
    judged = [json.loads(line) for line in Path(local).read_text().splitlines()]
    assert [j["correct"] for j in judged] == [0, 0, 1, 1]
    assert [a.path for a in client.list_artifacts(run_id, "outputs")] == ["outputs/arith.jsonl"]
    table = capsys.readouterr().out
    assert "[arith]" in table and "m2" in table


def test_safety_outputs_matched_to_toy_labels_with_the_matcher(tmp_path, capsys):
    """No judge calls (classifier: matcher): refusal rates from hand-labelled toy prompts."""
    items = toy_dataset("safety-eval")[:8]
    harmful = [i for i, it in enumerate(items) if it["label"] == "harmful"]
    benign = [i for i, it in enumerate(items) if it["label"] == "benign"]
    over = benign[0]  # one benign prompt refused
    rows = [{"instruction": it["prompt"][0]["content"], "generator": "m",
             "output": "I can't help with that." if i in harmful or i == over else "Sure, here is how."}
            for i, it in enumerate(items)]
    rows[harmful[0]]["output"] = "Sure, here is how."  # one harmful prompt answered
    path = tmp_path / "safety.json"
    path.write_text(json.dumps(rows))
    assert judge(tmp_path, "--outputs", str(path), "--suite", "safety", "--set", "eval.safety.classifier=matcher",
                 "--format", "json", "--no-track") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["n"], row["n_harmful"], row["n_benign"]) == (8, len(harmful), len(benign))
    assert row["refusal_rate"] == (len(harmful) - 1) / len(harmful)
    assert row["over_refusal_rate"] == 1 / len(benign)


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    path = arith_outputs(tmp_path)
    assert judge(tmp_path, "--outputs", str(path), "--suite", "pairwise", "--no-track") == 2
    assert "--suite pairwise: judged against a baseline; give --baseline FILE" in capsys.readouterr().err
    assert judge(tmp_path, "--outputs", str(path), "--suite", "arith", "--set", "judge.concurrency=0",
                 "--no-track") == 2
    assert "judge.concurrency" in capsys.readouterr().err
    assert judge(tmp_path, "--outputs", str(path), "--suite", "arith", "--set", "train.lr=1", "--no-track") == 2
    assert "harness judge takes judge.KEY=VALUE or eval.KEY=VALUE" in capsys.readouterr().err


def test_code_outputs_matched_and_run_in_the_sandbox(tmp_path, capsys):
    """Three toy tasks: two canonical solutions (pass) and one wrong program (fails its asserts)."""
    items = toy_dataset("code-eval")[:3]
    rows = [{"id": it["id"], "instruction": it["prompt"][0]["content"], "generator": "m",
             "output": f"```python\n{it['canonical_solution']}```"} for it in items]
    rows[2]["output"] = f"```python\ndef {items[2]['entry_point']}(*args):\n    return None\n```"
    path = tmp_path / "code.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert judge(tmp_path, "--outputs", str(path), "--suite", "code", "--format", "json", "--no-track") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["num_prompts"], row["num_samples"]) == (3, 3)
    assert row["pass_at_1"] == 2 / 3


def test_sweep_preflight_refuses_code_without_isolation(tmp_path, monkeypatch, capsys):
    """The code suite's isolation is checked before any training (here made unavailable on purpose)."""
    import yaml

    from judges.sandbox import runner as sandbox

    monkeypatch.setattr(sandbox, "isolation", lambda: sandbox.Isolation(False, False, ("no unshare here",)))
    spec = {"name": "code", "results_dir": str(tmp_path / "results"), "model": "toy://micro",
            "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"}, "eval": {"suites": ["code"]}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "code sandbox unavailable: no unshare here" in err
    assert not (tmp_path / "results" / "mlflow.db").exists()  # stopped before the store was opened


def _real_world_outputs(tmp_path: Path) -> tuple[Path, Path]:
    """AlpacaEval-style files whose instructions the toy world has no truth for."""
    questions = ["Write a haiku about autumn.", "What is 12+30?", "Explain photosynthesis to a child."]
    paths = []
    for name in ("model", "base"):
        rows = [{"instruction": q, "output": f"{name} answer {i}", "generator": name} for i, q in enumerate(questions)]
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(rows))
    return paths[0], paths[1]


def test_the_toy_judge_refuses_items_outside_the_toy_world(tmp_path, capsys):
    model, base = _real_world_outputs(tmp_path)
    assert judge(tmp_path, "--outputs", str(model), "--baseline", str(base), "--no-track") == 2
    err = capsys.readouterr().err
    assert "2 of 3 items are not from the toy world" in err and "Write a haiku" in err
    assert "--judge-url" in err and "--allow-toy-judge" in err


def test_allow_toy_judge_scores_them_all_as_ties(tmp_path, capsys):
    model, base = _real_world_outputs(tmp_path)
    code = judge(tmp_path, "--outputs", str(model), "--baseline", str(base), "--no-track", "--allow-toy-judge",
                 "--format", "json")
    assert code == 0
    [result] = json.loads(capsys.readouterr().out)
    # Every verdict is a tie: no truth for two, and both answers to "What is 12+30?" are wrong.
    assert (result["n"], result["ties"], result["win_rate"]) == (3, 3, 0.5)


def _fastchat_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """FastChat's MT-Bench layout: question.jsonl and model_answer/<model>.jsonl, as FastChat writes them."""
    questions = tmp_path / "question.jsonl"
    questions.write_text("".join(json.dumps({"question_id": q, "category": "writing", "turns": [f"Q{q} one",
                                                                                                f"Q{q} two"]}) + "\n"
                                 for q in (81, 82)))
    answers = []
    for model in ("model-a", "model-b"):
        path = tmp_path / "model_answer" / f"{model}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(json.dumps({"question_id": q, "answer_id": f"{model}-{q}", "model_id": model,
                                            "choices": [{"index": 0, "turns": [f"{model} a{q}", f"{model} b{q}"]}],
                                            "tstamp": 1.0}) + "\n" for q in (82, 81)))
        answers.append(path)
    return questions, answers[0], answers[1]


def test_fastchat_model_answers_are_read_as_they_are(tmp_path, capsys):
    questions, answers, baseline = _fastchat_files(tmp_path)
    code = judge(tmp_path, "--outputs", str(answers), "--baseline", str(baseline), "--suite", "mtbench",
                 "--set", f"eval.mtbench.data={questions}", "--allow-toy-judge", "--no-track", "--format", "json")
    assert code == 0, capsys.readouterr().err
    [result] = json.loads(capsys.readouterr().out)
    assert result["generator"] == "model-a" and result["n"] == 4  # 2 questions x 2 turns, judged per turn


def test_a_broken_fastchat_answer_names_the_line_and_field(tmp_path, capsys):
    questions, answers, baseline = _fastchat_files(tmp_path)
    answers.write_text(answers.read_text() + json.dumps({"question_id": 83, "model_id": "model-a",
                                                         "choices": [{"turns": "not a list"}]}) + "\n")
    code = judge(tmp_path, "--outputs", str(answers), "--baseline", str(baseline), "--suite", "mtbench",
                 "--set", f"eval.mtbench.data={questions}", "--allow-toy-judge", "--no-track")
    assert code == 2
    assert f"{answers}:3: field 'choices[0].turns': expected a list of strings" in capsys.readouterr().err
