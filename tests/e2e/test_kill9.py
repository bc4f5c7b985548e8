"""Fault campaign, kill -9 anywhere: a toy sweep killed with SIGKILL at seeded random moments, then run to the end.

The sweep (two seeds of an SFT trial, each judged pairwise against the base
model by a toy judge served from this test process, which counts the calls it
answers) runs once uninterrupted for the reference, then again in a fresh
results dir, killed after a random delay (seeded) and restarted, until a run
finishes on its own.  After every kill: no trial has two active runs, no
stage cache entry is half-written (its meta.json parses), and every trial that
was FINISHED before the kill is untouched by later runs (same run, same
number of logged training steps).  At the end: every trial FINISHED, the same
metrics as the uninterrupted run, and no judge request answered twice beyond
the replies in flight at a kill.  ``HARNESS_KILL_POINTS`` (default 5) sets the
number of kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from harness.serve.server import serve_in_background
from harness.serve.toy_judge import make_responder
from tests.e2e.test_interrupts import Sweep

KILL_POINTS = int(os.environ.get("HARNESS_KILL_POINTS", "5"))


class CountingJudge:
    """The toy judge, counting the replies it gave per request (messages + sampling params)."""

    def __init__(self):
        self.toy, self.answered, self.lock = make_responder(), Counter(), threading.Lock()

    def __call__(self, body):
        reply = self.toy(body)
        key = json.dumps({k: v for k, v in body.items() if k != "stream"}, sort_keys=True)
        with self.lock:
            self.answered[key] += 1
        return reply


def write_spec(tmp_path: Path, judge_url: str) -> Path:
    spec = {
        "name": "kill9", "results_dir": str(tmp_path / "results"), "model": "toy://micro", "seeds": [0, 1],
        "method": {"name": "sft"}, "data": {"train": "toy://arith-sft", "fraction": 0.02},
        "train": {"batch_size": 4, "max_length": 64, "max_steps": 20, "log_every": 5},
        "judge": {"base_url": judge_url, "model": "toy"},
        "eval": {"suites": ["pairwise"], "generation": {"max_new_tokens": 4},
                 "pairwise": {"limit": 3, "baseline": "base"}},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def store(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("kill9")
    if exp is None:
        return client, []
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def trial_state(tmp_path: Path) -> dict[str, tuple[str, str, int]]:
    """trial id -> (run id, status, train/loss values logged over all its runs, deleted ones included);
    asserts that no trial has two active runs."""
    client, active = store(tmp_path)
    trials = [r for r in active if "harness.trial_id" in r.data.tags]
    ids = [r.data.tags["harness.trial_id"] for r in trials]
    assert len(ids) == len(set(ids)), f"duplicate trial runs: {Counter(ids)}"
    exp = client.get_experiment_by_name("kill9")
    if exp is None:  # killed before the experiment was created
        return {}
    every = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    logged = Counter()
    for run in every:
        if "train/loss" in run.data.metrics and "harness.trial_id" in run.data.tags:
            logged[run.data.tags["harness.trial_id"]] += len(client.get_metric_history(run.info.run_id,
                                                                                       "train/loss"))
    return {r.data.tags["harness.trial_id"]: (r.info.run_id, r.info.status, logged[r.data.tags["harness.trial_id"]])
            for r in trials}


def final_metrics(tmp_path: Path) -> dict[str, dict[str, float]]:
    _, active = store(tmp_path)
    return {r.data.tags["harness.trial_id"]: {k: v for k, v in r.data.metrics.items()
                                               if k.startswith(("eval/pairwise/win", "eval/pairwise/n", "train/loss"))}
            for r in active if "harness.trial_id" in r.data.tags}


def check_caches(tmp_path: Path) -> None:
    for meta in (tmp_path / "results" / "cache").rglob("meta.json"):
        json.loads(meta.read_text())  # a marker is written whole (atomic rename) or not at all


@pytest.mark.slow  # a reference sweep and KILL_POINTS killed ones in child processes: minutes
def test_sigkill_anywhere_then_rerun_to_the_same_result(tmp_path):
    judge = CountingJudge()
    with serve_in_background(judge, model_name="toy") as server:
        ref_dir = tmp_path / "reference"
        ref_dir.mkdir()
        started = time.monotonic()
        ref = Sweep(write_spec(ref_dir, server.base_url), ref_dir)
        assert ref.finish(600) == 0, "\n".join(ref.lines)
        full_s = time.monotonic() - started
        first_output_s = ref.times[0] - started  # imports and startup: kills before it are all alike
        expected = final_metrics(ref_dir)
        assert len(expected) == 2 and all(m.get("eval/pairwise/n") == 3 for m in expected.values()), expected

        reference_calls = Counter(judge.answered)

        rng = random.Random(17)
        tried = survived = repeats = 0
        phases = []  # the last line the sweep printed before each kill
        for round_ in range(KILL_POINTS):
            judge.answered.clear()
            work = tmp_path / f"round{round_}"
            work.mkdir()
            spec = write_spec(work, server.base_url)
            sweep = Sweep(spec, work)
            # One kill at a seeded moment: every 4th round during startup, the others after the first output
            # (training, saving, generation, judging, MLflow and cache writes).
            try:
                delay = rng.uniform(0.5, first_output_s) if round_ % 4 == 0 else rng.uniform(first_output_s, full_s)
                sweep.proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                sweep.proc.send_signal(signal.SIGKILL)
            code = sweep.finish(30)
            if code != -signal.SIGKILL:  # it finished first: nothing was killed this round
                assert code == 0, "\n".join(sweep.lines)
                continue
            tried += 1
            phases.append(sweep.lines[-1].strip()[:40] if sweep.lines else "(before any output)")
            check_caches(work)
            before = {t: s for t, s in trial_state(work).items() if s[1] == "FINISHED"}  # raises on duplicates
            again = Sweep(spec, work)
            assert again.finish(600) == 0, "\n".join(again.lines)
            state = trial_state(work)
            assert {t: state[t] for t in before} == before  # finished trials were skipped, not retrained
            assert {s[1] for s in state.values()} == {"FINISHED"}
            assert final_metrics(work) == expected, round_
            repeats += sum(max(0, n - reference_calls[k]) for k, n in judge.answered.items())
            survived += 1
        print(f"kill -9 campaign: {tried} kill points tried, {survived} survived; {repeats} judge replies "
              f"repeated beyond the uninterrupted run's; uninterrupted run {full_s:.1f}s; killed after: {phases}")
        assert tried >= 1
        assert repeats <= 8 * tried  # at most the replies in flight (judge.concurrency 8) when a kill landed
