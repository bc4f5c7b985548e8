"""Fault campaign, parallel writers: four processes writing one MLflow store and its caches at once.

One results_dir, and at the same time (three child processes and this one):

- two ``harness sweep`` processes of different experiments: one sqlite store and one stage
  cache (their trials have the same stages, so both may train and store the same entries at
  about the same moment).  Both finish; each experiment has its parent and every trial
  FINISHED; each trial trained its stage with one whole ``train/loss`` history, or used the
  other process's finished entry;
- two ``harness judge`` processes judging overlapping outputs through one judge cache (and
  logging to the same store), against a toy judge served here that counts what it answers.
  Both print every prompt judged (wins + ties + losses = n, no errors); the cache then holds
  every distinct request, so a third run over all of it sends none and prints the same.

No output has "database is locked", an error or a traceback.  ``HARNESS_PARALLEL_ROUNDS``
(default 1) repeats it in a fresh directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.serve.server import serve_in_background
from judges.cache import ReplyCache
from tests.e2e.test_interrupts import ROOT, Sweep
from tests.e2e.test_judge import outputs_file
from tests.e2e.test_kill9 import CountingJudge

ROUNDS = int(os.environ.get("HARNESS_PARALLEL_ROUNDS", "1"))
STEPS = 4


def _spec(tmp_path: Path, name: str) -> Path:
    spec = {
        "name": name, "results_dir": str(tmp_path / "results"), "model": "toy://micro", "seeds": [0, 1],
        "method": {"name": "sft"}, "data": {"train": "toy://arith-sft", "fraction": 0.01},
        "train": {"batch_size": 4, "max_length": 64, "max_steps": STEPS, "log_every": 1},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _clean(lines: list[str]) -> None:
    text = "\n".join(lines)
    assert "locked" not in text and "Traceback" not in text and "error" not in text.lower(), text


def _check_sweeps(tmp_path: Path, sweeps: list[Sweep]) -> None:
    for sweep in sweeps:
        assert sweep.finish(600) == 0, "\n".join(sweep.lines)
        _clean(sweep.lines)
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    histories = {}
    for name in ("parallel-a", "parallel-b"):
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        trials = [r for r in runs if "harness.trial_id" in r.data.tags]
        assert len(runs) == 3 and len(trials) == 2, [r.data.tags for r in runs]
        assert {r.info.status for r in runs} == {"FINISHED"}
        for run in trials:
            histories[run.info.run_id] = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    # The experiments' trials have the same stages: each trained its stage (a whole history), or found the
    # other process's finished entry (no history); the entry's marker names a run that trained it whole.
    assert all(h in ([], list(range(1, STEPS + 1))) for h in histories.values()), histories
    markers = list((tmp_path / "results" / "cache" / "stages").rglob("meta.json"))
    assert len(markers) == 2
    for marker in markers:
        assert histories[json.loads(marker.read_text())["run_id"]] == list(range(1, STEPS + 1))


def _judge_args(tmp_path: Path, url: str, outputs: list[Path], experiment: str) -> list[str]:
    return ["judge", "--suite", "pairwise", "--format", "json", "--judge-url", url, "--judge-model", "toy",
            "--results-dir", str(tmp_path / "results"), "--experiment", experiment,
            "--baseline", str(tmp_path / "base.json"), "--outputs", *map(str, outputs)]


def _judge(tmp_path: Path, url: str, outputs: list[Path], experiment: str) -> subprocess.Popen:
    """``harness judge`` in a child process."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *_judge_args(tmp_path, url, outputs, experiment)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(proc: subprocess.Popen) -> list[dict]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    _clean(err.splitlines())
    return json.loads(out)


@pytest.mark.slow  # four writers at once (~55 CPU-s: 3 interpreters with torch), then a judge run here
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_parallel_sweeps_and_judges_share_one_store_and_caches(tmp_path, capsys, monkeypatch, round_):
    n = 16
    outputs_file(tmp_path / "base.json", "base", set(range(0, n, 3)), n)
    one = outputs_file(tmp_path / "one.jsonl", "one", set(range(0, n, 2)), n)
    two = outputs_file(tmp_path / "two.jsonl", "two", set(range(1, n, 2)), n)
    judge = CountingJudge()
    with serve_in_background(judge, model_name="toy") as server:
        sweeps = [Sweep(_spec(tmp_path, name), tmp_path) for name in ("parallel-a", "parallel-b")]
        child = _judge(tmp_path, server.base_url, [one], "judge-a")
        monkeypatch.chdir(tmp_path)  # the fourth writer is this process (one interpreter start less)
        assert main(_judge_args(tmp_path, server.base_url, [one, two], "judge-b")) == 0
        here = capsys.readouterr()
        _clean(here.err.splitlines())
        results = [_finished(child), json.loads(here.out)]
        assert all(s.proc.poll() is None for s in sweeps)  # they were still writing meanwhile
        _check_sweeps(tmp_path, sweeps)
        for rows in results:
            for row in rows:
                assert row["errors"] == 0 and row["wins"] + row["ties"] + row["losses"] == row["n"] == n, row
        distinct = len(judge.answered)
        assert distinct > 2 * n  # two candidates, both orders (outputs both candidates share ask alike)
        assert len(ReplyCache(tmp_path / "results" / "cache" / "judge")) == distinct
        judge.answered.clear()
        assert main(_judge_args(tmp_path, server.base_url, [one, two], "judge-c")) == 0
        again = json.loads(capsys.readouterr().out)
        assert sum(judge.answered.values()) == 0 and again == results[1]
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    for name, generators in (("judge-a", 1), ("judge-b", 2), ("judge-c", 2)):
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        assert len(runs) == generators and {r.info.status for r in runs} == {"FINISHED"}
