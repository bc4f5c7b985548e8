"""A sweep logged to an MLflow server whose backend is a real PostgreSQL server (the cluster set-up).

A new PostgreSQL cluster is started in a temporary folder (``tests/postgres_server.py``), ``sweep_server``
starts ``mlflow server`` on it, and ``harness sweep --tracking-uri http://...`` runs a two-trial toy
sweep of two steps.  The run tree is read back through the server (one parent with
``harness.sweep_id``, one FINISHED child per trial with its ``train/loss`` history), the rows are in
PostgreSQL itself, and the trials' artifacts are under the spec's artifact root.  Where no
PostgreSQL can be had the test is skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness.run.tracking import Store
from harness.run.tracking_server import sweep_server
from tests.postgres_server import PostgresUnavailable, local_postgres

ROOT = Path(__file__).resolve().parents[2]
STEPS = 2


@pytest.fixture
def postgres_url():
    try:
        with local_postgres() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")


def _spec(tmp_path: Path) -> Path:
    spec = {
        "name": "pg-sweep", "results_dir": str(tmp_path / "results"), "model": "toy://micro", "seeds": [0, 1],
        "method": {"name": "sft"}, "data": {"train": "toy://arith-sft", "fraction": 0.01},
        "train": {"batch_size": 4, "max_length": 64, "max_steps": STEPS, "log_every": 1}, "eval": {"suites": []},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow  # PostgreSQL, an mlflow server and a sweep in a child process: ~25 s, ~14 CPU-s
def test_a_sweep_logs_through_an_mlflow_server_on_postgresql(tmp_path, postgres_url):
    with sweep_server(Store(postgres_url, str(tmp_path / "server-artifacts"))) as served:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONPATH": str(ROOT)}
        sweep = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(_spec(tmp_path)),
                                "--tracking-uri", served.tracking_uri], check=False, cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300)
        assert sweep.returncode == 0, sweep.stdout + sweep.stderr
        assert "2 ran, 0 skipped, 0 failed" in sweep.stderr and sweep.stdout == "", sweep.stdout + sweep.stderr
        client = MlflowClient(served.tracking_uri)
        exp = client.get_experiment_by_name("pg-sweep")
        runs = client.search_runs([exp.experiment_id])
        histories = {r.data.tags.get("harness.trial_id"): [m.step for m in
                                                           client.get_metric_history(r.info.run_id, "train/loss")]
                     for r in runs}
    [parent] = [r for r in runs if "harness.trial_id" not in r.data.tags]
    trials = [r for r in runs if "harness.trial_id" in r.data.tags]
    assert len(runs) == 3 and len(trials) == 2 and parent.data.tags["harness.sweep_id"]
    for trial in trials:
        assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert trial.data.tags["harness.sweep_id"] == parent.data.tags["harness.sweep_id"]
        assert trial.info.status == "FINISHED" and trial.info.run_name == trial.data.tags["harness.trial_id"]
        assert histories[trial.data.tags["harness.trial_id"]] == list(range(1, STEPS + 1))
        local = Path(trial.info.artifact_uri.removeprefix("file://"))
        assert local.is_relative_to(tmp_path / "results" / "artifacts") and (local / "resolved_spec.yaml").is_file()
    assert {t.data.params["train.seed"] for t in trials} == {"0", "1"}
    # and the rows are PostgreSQL's (the server above was its only way in)
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        count = conn.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(exp.experiment_id),))
        assert count.fetchone()[0] == 3
