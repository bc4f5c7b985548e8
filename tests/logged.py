"""What a sweep reported about its own work, read back from its MLflow store (never from module globals).

A trained stage logs ``train/optimizer_steps`` (at its last step), and
``train/reference_passes`` / ``train/reward_passes`` (the passes it ran rather
than read from a cache, at step 0).  Summing every logged value over every run
counts the work of all sweeps on the store so far (deleted runs included); the difference across a
command is that command's work.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient


def logged_total(results_dir: Path, key: str) -> float:
    """The sum of every logged value of metric ``key`` over every run in ``results_dir``'s store.

    0 when the store does not exist (a command that failed before tracking started)."""
    db = Path(results_dir) / "mlflow.db"
    if not db.exists():
        return 0.0
    client = MlflowClient(f"sqlite:///{db}")
    total = 0.0
    for exp in client.search_experiments():
        # Deleted runs too: a stage that trains again replaces its run, and the old run's work still happened.
        for run in client.search_runs([exp.experiment_id], max_results=10_000, run_view_type=ViewType.ALL):
            if key in run.data.metrics:
                total += sum(m.value for m in client.get_metric_history(run.info.run_id, key))
    return total


def steps(results_dir: Path) -> float:
    return logged_total(results_dir, "train/optimizer_steps")
