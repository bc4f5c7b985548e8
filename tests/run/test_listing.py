"""`harness ls`: experiments, then one experiment's trials with status, headline metrics and checkpoints."""

from __future__ import annotations

import json

from harness.cli import main
from harness.run.listing import headline
from harness.run.tracking import Tracker, resolve_store


def _store(tmp_path):
    """A real sqlite store with the run tree a sweep leaves: a sweep run, two trial runs, a stage run."""
    tracker = Tracker(resolve_store(None, None, None, str(tmp_path / "results")))
    exp = tracker.experiment("quick")
    parent = tracker.create_run(exp, "sweep-s1", {"harness.role": "sweep", "harness.sweep_id": "s1"})
    done = tracker.create_run(exp, "beta0.1-seed0-aaaa", {"harness.trial_id": "beta0.1-seed0-aaaa",
                                                         "harness.sweep_id": "s1", "harness.checkpoint": "/ck/a"},
                              parent)
    tracker.log_metrics(done, {"eval/arith/pass_at_1": 0.31, "eval/arith/pass_at_1_se": 0.02,
                               "eval/pairwise/win_rate": 0.6, "eval/pairwise/judge_calls": 100.0,
                               "eval/single/math/mean_score": 7.0})
    tracker.set_status(done, "FINISHED")
    tracker.create_run(exp, "beta0.1-seed0-aaaa/sft", {"harness.stage": "sft", "harness.stage_of": "beta0.1-seed0-aaaa"},
                       done)
    failed = tracker.create_run(exp, "beta0.5-seed0-bbbb", {"harness.trial_id": "beta0.5-seed0-bbbb",
                                                           "harness.sweep_id": "s1"}, parent)
    tracker.set_status(failed, "FAILED")
    return tracker


def test_headline_metrics_leave_out_errors_counters_and_sub_keys():
    assert headline({"eval/arith/pass_at_1": 0.3, "eval/arith/pass_at_1_se": 0.1, "eval/pairwise/judge_calls": 5.0,
                     "eval/single/math/mean_score": 7.0, "train/loss": 1.0}) == {"arith/pass_at_1": 0.3}


def test_ls_lists_experiments_then_trials(tmp_path, capsys):
    _store(tmp_path)
    results = ["--results-dir", str(tmp_path / "results"), "--format", "json"]
    assert main(["ls", *results]) == 0
    [exp] = json.loads(capsys.readouterr().out)
    assert exp == {**exp, "experiment": "quick", "trials": 2, "finished": 1, "failed": 1, "running": 0}
    assert main(["ls", "quick", *results]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["trial"], r["status"]) for r in rows] == [("beta0.5-seed0-bbbb", "FAILED"),
                                                         ("beta0.1-seed0-aaaa", "FINISHED")]
    assert rows[1] == {**rows[1], "arith/pass_at_1": 0.31, "pairwise/win_rate": 0.6, "checkpoint": "/ck/a"}
    assert "arith/pass_at_1_se" not in rows[1] and rows[0]["checkpoint"] == "-"


def test_ls_of_an_unknown_experiment_names_the_ones_there(tmp_path, capsys):
    _store(tmp_path)
    assert main(["ls", "quik", "--results-dir", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "no experiment 'quik'" in err and "(did you mean 'quick'? experiments: quick)" in err


def test_ls_lists_judge_only_runs_by_generator(tmp_path, capsys):
    """`harness judge` logs one run per generator (tag harness.role=judge, no trial id); `harness ls`
    said "none" for such an experiment.  It lists them, sweep column `judge`."""
    tracker = _store(tmp_path)
    exp = tracker.experiment("judge")
    for generator, win in (("my-model", 0.7), ("other", 0.4)):
        run = tracker.create_run(exp, generator, {"harness.role": "judge", "harness.generator": generator})
        tracker.log_metrics(run, {"eval/pairwise/win_rate": win, "eval/pairwise/judge_calls": 12.0})
        tracker.set_status(run, "FINISHED")
    results = ["--results-dir", str(tmp_path / "results"), "--format", "json"]
    assert main(["ls", *results]) == 0
    listed = {e["experiment"]: e for e in json.loads(capsys.readouterr().out)}
    assert listed["judge"]["trials"] == 2 and listed["quick"]["trials"] == 2
    assert main(["ls", "judge", *results]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted((r["trial"], r["sweep"], r["pairwise/win_rate"]) for r in rows) == [("my-model", "judge", 0.7),
                                                                                       ("other", "judge", 0.4)]
