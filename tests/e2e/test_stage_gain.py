"""experiments/stage_gain.py, the script behind the README's measured tables.

The paired contrast is checked against scipy's t quantile on hand-made
values, and ``collect`` against a small MLflow store holding two sweeps of one
experiment: a trial both sweeps logged counts once.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "stage_gain.py"


@pytest.fixture(scope="module")
def stage_gain():
    spec = importlib.util.spec_from_file_location("stage_gain", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_contrast_is_the_paired_t_interval_over_seeds(stage_gain, capsys):
    a = {0: 30.0, 1: 36.0, 2: 29.5, 3: 31.0}
    b = {0: 22.0, 1: 28.5, 2: 28.0, 3: 24.0}
    levels = {lvl: {s: {"start": {}, "end": {"len": v[s]}} for s in v} for lvl, v in (("sum", a), ("mean", b))}
    levels["mean"][9] = {"start": {}, "end": {"len": 1.0}}  # a seed only one side has: not paired, left out
    stage_gain.print_contrast(levels, "sum", "mean", ["len"])
    out = capsys.readouterr().out
    diffs = [8.0, 7.5, 1.5, 7.0]
    mean = sum(diffs) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3)
    half = stats.t.ppf(0.975, 3) * sd / 2
    assert "seeds [0, 1, 2, 3]" in out
    got = re.search(r"mean ([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]", out).groups()
    assert [float(x) for x in got] == pytest.approx([mean, mean - half, mean + half], abs=5e-4)
    with pytest.raises(SystemExit, match="no level 'median'"):
        stage_gain.print_contrast(levels, "sum", "median", ["len"])


def _trial(client, exp, sweep, trial_id, start, end):
    run = client.create_run(exp, tags={"mlflow.parentRunId": sweep, "harness.trial_id": trial_id})
    client.log_metric(run.info.run_id, "m", end)
    stage = client.create_run(exp, tags={"mlflow.parentRunId": run.info.run_id, "harness.stage": "sft"})
    client.log_metric(stage.info.run_id, "m", start)


def test_collect_counts_each_trial_configuration_once(stage_gain, tmp_path):
    """Two sweeps share a trial (renamed by a new axis): the newer run counts; an older-only trial stays."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    old = client.create_run(exp, start_time=1000, tags={"harness.role": "sweep"}).info.run_id
    new = client.create_run(exp, start_time=2000, tags={"harness.role": "sweep"}).info.run_id
    _trial(client, exp, old, "dpo-seed0-0123abcd", 1.0, 5.0)    # before an axis was added
    _trial(client, exp, new, "dpo-steps40-seed0-0123abcd", 1.0, 3.0)
    _trial(client, exp, new, "dpo-steps40-seed1-89abcdef", 2.0, 7.0)
    _trial(client, exp, old, "ipo-seed0-fedcba98", 4.0, 6.0)     # only the older sweep ran it
    got = stage_gain.collect(uri, "e", "sft", ["m"])
    assert got == {("dpo-steps40", 0): {"start": {"m": 1.0}, "end": {"m": 3.0}},
                   ("dpo-steps40", 1): {"start": {"m": 2.0}, "end": {"m": 7.0}},
                   ("ipo", 0): {"start": {"m": 4.0}, "end": {"m": 6.0}}}
