"""End-to-end sweeps on the toy world's micro model: the MLflow run tree, caching, resume.

Caching is proven by counting the optimizer steps and reference passes each
trained stage reports in MLflow (``tests.logged``), never by timing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness.cli import main
from tests.logged import logged_total, steps

SFT_STEPS, DPO_STEPS = 3, 2


def write_spec(tmp_path: Path, **changes) -> Path:
    spec = {
        "name": "sweeptest",
        "results_dir": str(tmp_path / "results"),
        "model": "toy://micro",
        "eval": {"suites": ["arith"], "include_base": True, "after": "every_stage",
                 "generation": {"max_new_tokens": 4}, "arith": {"limit": 8}},
        "train": {"batch_size": 4, "max_length": 64, "log_every": 2},
        "data": {"fraction": 0.01},
        "stages": [
            {"name": "sft", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"},
             "train": {"max_steps": SFT_STEPS, "lr": 1e-3}},
            {"name": "dpo", "method": {"name": "dpo"}, "data": {"train": "toy://arith-pairs"},
             "train": {"max_steps": DPO_STEPS, "lr": 1e-4}},
        ],
        "ablate": {"stages.dpo.method.beta": [0.1, 0.5]},
    }
    spec.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def runs(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeptest")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def default_sweep(tmp_path_factory):
    """The default spec, swept once for this module: (its directory, its spec file, the work it reported).

    The run-tree test and the report test both read this store, and a re-sweep
    adds no run, so neither test can change what the other sees.
    """
    root = tmp_path_factory.mktemp("default-sweep")
    spec = write_spec(root)
    with pytest.MonkeyPatch.context() as mp:  # conftest's function-scoped guard does not cover a module fixture
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(["sweep", str(spec)]) == 0
        counted = {k: logged_total(root / "results", f"train/{k}")
                   for k in ("optimizer_steps", "reference_passes", "data_passes")}
    return root, spec, counted


def test_sweep_run_tree_caching_and_rerun(default_sweep, tmp_path):
    root, spec, counted = default_sweep
    # SFT is shared by both DPO trials: it trains once.
    assert counted["optimizer_steps"] == SFT_STEPS + 2 * DPO_STEPS
    # Both DPO trials start from the same SFT output: one reference pass serves both betas.
    assert counted["reference_passes"] == 1
    # ...and one tokenization of their data in this process (the SFT stage tokenizes its own).
    assert counted["data_passes"] == 2
    client, all_runs = runs(root)
    parents = [r for r in all_runs if r.data.tags.get("harness.role") == "sweep"]
    trials = [r for r in all_runs if "harness.trial_id" in r.data.tags]
    stages = [r for r in all_runs if "harness.stage" in r.data.tags]
    assert len(parents) == 1 and len(trials) == 3 and len(stages) == 4
    parent_id = parents[0].info.run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent_id}
    assert {r.data.tags["harness.trial_id"] for r in trials} >= {"base"}
    for r in trials:
        assert r.info.status == "FINISHED"
        assert r.info.run_name == r.data.tags["harness.trial_id"]
        assert "eval/arith/pass_at_1" in r.data.metrics
        for tag in ("harness.sweep_id", "harness.spec_sha", "harness.git_sha", "harness.method", "harness.versions"):
            assert tag in r.data.tags
        assert "torch" in json.loads(r.data.tags["harness.versions"])
    sft_runs = [r for r in stages if r.data.tags["harness.stage"] == "sft"]
    assert sorted(r.data.tags["harness.cache_hit"] for r in sft_runs) == ["false", "true"]
    hit = next(r for r in sft_runs if r.data.tags["harness.cache_hit"] == "true")
    miss = next(r for r in sft_runs if r.data.tags["harness.cache_hit"] == "false")
    assert hit.data.tags["harness.stage_source_run"] == miss.info.run_id
    # every_stage: the SFT stage runs carry their own eval metrics.
    assert all("eval/arith/pass_at_1" in r.data.metrics for r in sft_runs)
    # Training metrics at step 1, every log_every (2) steps and the last step.
    history = client.get_metric_history(miss.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    dpo_trial = next(r for r in trials if r.data.tags["harness.trial_id"] != "base")
    assert dpo_trial.data.params["stages.dpo.method.beta"] in ("0.1", "0.5")
    assert "train.effective_batch_size" in dpo_trial.data.params
    artifacts = {a.path for a in client.list_artifacts(dpo_trial.info.run_id)}
    assert {"resolved_spec.yaml", "outputs", "judgments", "checkpoint.json"} <= artifacts
    assert [a.path for a in client.list_artifacts(dpo_trial.info.run_id, "outputs")] == ["outputs/arith.jsonl"]
    assert [a.path for a in client.list_artifacts(dpo_trial.info.run_id, "judgments")] == ["judgments/arith.jsonl"]
    local = Path(client.download_artifacts(dpo_trial.info.run_id, "outputs/arith.jsonl", str(tmp_path)))
    rows = [json.loads(line) for line in local.read_text().splitlines()]
    assert len(rows) == 8 and {"id", "prompt", "output", "generation"} <= set(rows[0])
    assert rows[0]["generation"]["max_new_tokens"] == 4
    # A stage that trains on pairs logs the data audit; an SFT stage does not.
    dpo_stage = next(r for r in stages if r.data.tags["harness.stage"] == "dpo")
    assert "audit.json" in {a.path for a in client.list_artifacts(dpo_stage.info.run_id)}
    assert dpo_stage.data.metrics["data/audit/identical_pairs"] == 0
    assert 0 <= dpo_stage.data.metrics["data/audit/chosen_longer"] <= 1
    assert not any(k.startswith("data/audit/") for k in miss.data.metrics)

    # A second run trains nothing and adds no run.
    before = steps(root / "results")
    assert main(["sweep", str(spec)]) == 0
    assert steps(root / "results") == before
    assert len(runs(root)[1]) == len(all_runs)
    assert not (Path.cwd() / "mlruns").exists()


def test_logged_outputs_name_their_trial_and_stage(default_sweep, tmp_path):
    """Both SFT stage runs log the one cached eval, each under its own name; trials under their ids."""
    root, _, _ = default_sweep
    client, all_runs = runs(root)

    def generators(run) -> set:
        local = Path(client.download_artifacts(run.info.run_id, "outputs/arith.jsonl", str(tmp_path / run.info.run_id)))
        return {json.loads(line)["generator"] for line in local.read_text().splitlines()}

    sft_runs = [r for r in all_runs if r.data.tags.get("harness.stage") == "sft"]
    assert len(sft_runs) == 2
    for run in sft_runs:
        assert generators(run) == {f"{run.data.tags['harness.stage_of']}/sft"}
    for run in (r for r in all_runs if "harness.trial_id" in r.data.tags):
        assert generators(run) == {run.data.tags["harness.trial_id"]}


def test_failed_and_killed_trials_resume_their_own_run(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, ablate={}, stages=None, method={"name": "sft"},
                      data={"train": "toy://arith-sft", "fraction": 0.01},
                      train={"batch_size": 4, "max_length": 64, "max_steps": 2})
    spec_dict = yaml.safe_load(spec.read_text())
    spec_dict["eval"] = {"suites": ["arith"], "generation": {"max_new_tokens": 4}, "arith": {"limit": 4}}
    spec.write_text(yaml.safe_dump(spec_dict))
    from harness.run import sweep

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(sweep, "_evaluate", boom)
    assert main(["sweep", str(spec)]) == 1
    client, first = runs(tmp_path)
    trial = next(r for r in first if "harness.trial_id" in r.data.tags)
    assert trial.info.status == "FAILED"
    assert "injected failure" in trial.data.tags["harness.error"]
    monkeypatch.undo()

    before = steps(tmp_path / "results")
    assert main(["sweep", str(spec)]) == 0
    client, second = runs(tmp_path)
    assert len(second) == len(first)
    resumed = client.get_run(trial.info.run_id)
    assert resumed.info.status == "FINISHED" and "harness.error" not in resumed.data.tags
    assert "eval/arith/pass_at_1" in resumed.data.metrics
    assert steps(tmp_path / "results") == before  # the trained stage came from the cache

    # A run left RUNNING by a killed process is resumed, not duplicated.
    client.update_run(trial.info.run_id, status="RUNNING")
    assert main(["sweep", str(spec)]) == 0
    assert len(runs(tmp_path)[1]) == len(first)
    assert client.get_run(trial.info.run_id).info.status == "FINISHED"


def test_force_retrains_and_reuses_the_child_run(tmp_path):
    spec = write_spec(tmp_path, ablate={}, eval={"suites": []})
    assert main(["sweep", str(spec)]) == 0
    n_runs = len(runs(tmp_path)[1])
    before = steps(tmp_path / "results")
    assert main(["sweep", str(spec), "--force"]) == 0
    assert steps(tmp_path / "results") - before == SFT_STEPS + DPO_STEPS
    assert len(runs(tmp_path)[1]) == n_runs


def test_dry_run_lists_trials(tmp_path, capsys):
    spec = write_spec(tmp_path, seeds=[0, 1])
    assert main(["sweep", str(spec), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[-1].startswith("4 ")
    assert not (tmp_path / "results" / "mlflow.db").exists()


@pytest.mark.parametrize("problem", ["key", "data", "implicit"])
def test_bad_input_fails_fast_without_traceback(tmp_path, capsys, problem):
    if problem == "key":
        spec = write_spec(tmp_path, train={"batch_sise": 4})
        needle = "batch_sise"
    elif problem == "implicit":
        msgs = [[{"role": "user", "content": u}, {"role": "assistant", "content": a}] for u, a in [("hi", "yo"), ("ho", "ya")]]
        data = tmp_path / "hh.jsonl"
        data.write_text(json.dumps({"chosen": msgs[0], "rejected": msgs[0]}) + "\n"
                        + json.dumps({"chosen": msgs[0], "rejected": msgs[1]}) + "\n")
        spec = write_spec(tmp_path, ablate={}, stages=None, method={"name": "dpo"}, data={"train": str(data)})
        needle = f"{data}:2: field 'prompt': missing, and 'chosen'/'rejected' share no leading messages"
    else:
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": \n')
        spec = write_spec(tmp_path, ablate={}, stages=None, method={"name": "sft"}, data={"train": str(bad)})
        needle = f"{bad}:2"
    before = steps(tmp_path / "results")
    assert main(["sweep", str(spec)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert steps(tmp_path / "results") == before


def test_report_prints_a_row_per_trial(default_sweep, tmp_path, capsys):
    root, _, _ = default_sweep
    capsys.readouterr()
    out_dir = tmp_path / "report"
    assert main(["report", "sweeptest", "--results-dir", str(root / "results"), "--out", str(out_dir),
                 "--format", "all"]) == 0
    table = capsys.readouterr().out
    assert "stages.dpo.method.beta" in table and "eval/arith/pass_at_1" in table
    runs_section = table.split("## Runs")[1].split("##")[0]
    body = [line for line in runs_section.strip().splitlines()[2:] if line.startswith("|")]
    assert len(body) == 3 + 2  # base, two trials, and the two evaluated SFT stage runs
    # Each trial's pass@1 and its SE (numbers in runs.csv), recomputed here from its per-prompt judgments.
    report = pd.read_csv(out_dir / "runs.csv").set_index("run")
    client, all_runs = runs(root)
    for run in (r for r in all_runs if "harness.trial_id" in r.data.tags):
        local = client.download_artifacts(run.info.run_id, "judgments/arith.jsonl", str(tmp_path / run.info.run_id))
        correct = np.array([json.loads(line)["correct"] for line in Path(local).read_text().splitlines()], float)
        se = correct.std(ddof=1) / np.sqrt(len(correct))
        row = report.loc[run.data.tags["harness.trial_id"]]
        assert row["eval/arith/pass_at_1"] == pytest.approx(correct.mean())
        assert row["eval/arith/pass_at_1_se"] == pytest.approx(se, nan_ok=True)


def test_train_runs_one_trial_every_time(tmp_path, capsys):
    spec = write_spec(tmp_path, eval={"suites": []})
    for _ in range(2):
        before = steps(tmp_path / "results")
        assert main(["train", str(spec), "--set", "stages.dpo.method.beta=0.3"]) == 0
        assert steps(tmp_path / "results") - before == SFT_STEPS + DPO_STEPS  # never skips, never reuses a cache
    _, all_runs = runs(tmp_path)
    trials = [r for r in all_runs if "harness.trial_id" in r.data.tags]
    assert len(trials) == 1
    assert trials[0].data.params["stages.dpo.method.beta"] == "0.3"
    assert "ignoring ablate" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["answer", "greedy-n"])
def test_eval_problems_fail_before_training(tmp_path, capsys, problem):
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(json.dumps({"prompt": "What is 1+1?", "answer": "2"}) + "\n"
                         + json.dumps({"prompt": "What is 2+2?", "answer": "four"}) + "\n")
    arith = {"data": str(eval_file) if problem == "answer" else "toy://arith-eval", "limit": 4}
    if problem == "greedy-n":
        arith.update(n=4, k=[1, 4])
    spec = write_spec(tmp_path, eval={"suites": ["arith"], "arith": arith})
    before = steps(tmp_path / "results")
    assert main(["sweep", str(spec)]) == 2
    err = capsys.readouterr().err
    needle = f"{eval_file}:2: field 'answer'" if problem == "answer" else "eval.arith.n: 4 samples need temperature"
    assert needle in err
    assert steps(tmp_path / "results") == before


@pytest.mark.parametrize("model, needle", [("./no/such/model", "model directory './no/such/model' not found"),
                                           ("toy://arith-sft", "is not a toy model")])
def test_missing_model_fails_before_training(tmp_path, capsys, model, needle):
    spec = write_spec(tmp_path, model=model)
    assert main(["sweep", str(spec)]) == 2
    assert needle in capsys.readouterr().err


def _histories(tmp_path: Path, key: str = "train/loss") -> dict[str, list[int]]:
    """Active run name -> the steps of its ``key`` history, in logged order (get_metric_history)."""
    client, found = runs(tmp_path)
    return {r.info.run_name: [m.step for m in sorted(client.get_metric_history(r.info.run_id, key),
                                                       key=lambda m: m.timestamp)]
            for r in found if key in r.data.metrics}


def _interrupt_after(monkeypatch, stop_step: int):
    """Ctrl-C (KeyboardInterrupt) inside the first trained stage, right after it logged step ``stop_step``."""
    from harness.run import sweep

    real = sweep.train_stage

    def interrupted(stage, path, input_key, cache_dir, log, *args, **kwargs):
        def log_then_stop(metrics, step):
            log(metrics, step)
            if step == stop_step:
                raise KeyboardInterrupt

        return real(stage, path, input_key, cache_dir, log_then_stop, *args, **kwargs)

    monkeypatch.setattr(sweep, "train_stage", interrupted)


@pytest.mark.parametrize("staged", [False, True], ids=["one-stage", "stages"])
def test_rerun_and_force_keep_one_monotone_metric_history(tmp_path, monkeypatch, staged):
    """Interrupted at step 2 of 4, resumed, then forced: each active run's train/loss history is 1, 2, 3, 4
    once (issue 17 item 7), and no run is duplicated: a retrained stage's old run is replaced, not reused."""
    train = {"batch_size": 4, "max_length": 64, "max_steps": 4, "log_every": 1, "lr": 1e-3}
    sft = {"name": "sft", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"}, "train": train}
    layout = {"stages": [sft]} if staged else {"stages": None, "method": sft["method"], "train": train,
                                                 "data": {"train": "toy://arith-sft", "fraction": 0.01}}
    spec = write_spec(tmp_path, ablate={}, eval={"suites": []}, **layout)
    _interrupt_after(monkeypatch, 2)
    assert main(["sweep", str(spec)]) == 130
    assert list(_histories(tmp_path).values()) == [[1, 2]]
    monkeypatch.undo()
    n_runs = len(runs(tmp_path)[1])
    for extra in ([], ["--force"]):
        assert main(["sweep", str(spec), *extra]) == 0
        histories = _histories(tmp_path)
        assert list(histories.values()) == [[1, 2, 3, 4]], histories
        assert len(runs(tmp_path)[1]) == n_runs
        _, found = runs(tmp_path)
        trials = [r for r in found if "harness.trial_id" in r.data.tags]
        assert len(trials) == 1 and trials[0].info.status == "FINISHED"


@pytest.mark.parametrize("staged", [False, True], ids=["one-stage", "stages"])
def test_non_finite_loss_fails_the_trial_naming_stage_and_step(tmp_path, monkeypatch, capsys, staged):
    """A NaN from the model's forward at step 2 (fault campaign, NaN and inf): the trial is FAILED with
    the stage and step named, nothing is cached, no run is left RUNNING, and a clean re-run finishes
    with one monotone history."""
    from harness.train import loop

    train = {"batch_size": 4, "max_length": 64, "max_steps": 3, "log_every": 1, "lr": 1e-3}
    sft = {"name": "sft", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"}, "train": train}
    layout = {"stages": [sft]} if staged else {"stages": None, "method": sft["method"], "train": train,
                                                 "data": {"train": "toy://arith-sft", "fraction": 0.01}}
    spec = write_spec(tmp_path, ablate={}, eval={"suites": []}, **layout)
    real, calls = loop.forward_method, []

    def poisoned(*args, **kwargs):
        numerators, metrics, tokens = real(*args, **kwargs)
        calls.append(1)
        return (numerators * float("nan") if len(calls) == 2 else numerators), metrics, tokens

    monkeypatch.setattr(loop, "forward_method", poisoned)
    assert main(["sweep", str(spec)]) == 1
    err = capsys.readouterr().err
    name = "sft" if staged else "main"  # a spec without stages: trains one stage named main
    assert f"stage {name} (sft): non-finite loss (nan) at step 2 of 3" in err, err[-600:]
    _, found = runs(tmp_path)
    assert {r.info.status for r in found} == {"FAILED"}  # parent, trial and (with stages) the stage's run
    trial = next(r for r in found if "harness.trial_id" in r.data.tags)
    assert "at step 2 of 3" in trial.data.tags["harness.error"]
    assert not list((tmp_path / "results" / "cache").rglob("meta.json"))  # no stage cache entry was completed
    assert list(_histories(tmp_path).values()) == [[1]]  # step 2 was never logged, nor applied

    monkeypatch.undo()
    assert main(["sweep", str(spec)]) == 0
    assert list(_histories(tmp_path).values()) == [[1, 2, 3]]
    assert {r.info.status for r in runs(tmp_path)[1]} == {"FINISHED"}


def test_the_sweep_counts_its_trials_and_the_base(default_sweep, capsys):
    """Issue 18: the sweep said `2 trial(s)` and then `3 ran` (the base trial is the third); it now says
    `2 trials + base`, and the closing count adds up to it.  A re-sweep skips all three and adds no run."""
    _, spec, _ = default_sweep
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(["sweep", str(spec)]) == 0
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert "experiment 'sweeptest': 2 trials + base; store sqlite:///" in said
    assert "0 ran, 3 skipped, 0 failed" in said
