"""Data quality as an ablation axis: ``ablate: {data.filter.dedup: [none, near]}`` expands and trains
(with train.packing on, which also runs the packed path through a real stage)."""

from __future__ import annotations

import yaml
from mlflow.tracking import MlflowClient

from harness.cli import main
from tests.logged import logged_total, steps


def test_dedup_ablation_expands_and_trains(tmp_path, capsys):
    spec = {
        "name": "dedupablate",
        "results_dir": str(tmp_path / "results"),
        "model": "toy://micro",
        "method": {"name": "sft"},
        "data": {"train": "toy://arith-sft", "fraction": 0.05},
        "train": {"batch_size": 4, "max_length": 32, "max_steps": 1, "lr": 1e-3, "packing": True},
        "ablate": {"data.filter.dedup": ["none", "near"]},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("2 ")
    assert main(["sweep", str(path)]) == 0
    assert steps(tmp_path / "results") == 2
    # One sweep process, but each dedup setting tokenizes its own data (the in-process memo misses).
    assert logged_total(tmp_path / "results", "train/data_passes") == 2
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dedupablate")
    trials = [r for r in client.search_runs([exp.experiment_id]) if "harness.trial_id" in r.data.tags]
    by_dedup = {r.data.params["data.filter.dedup"]: r.data.metrics for r in trials}
    assert set(by_dedup) == {"none", "near"}
    # 300 rows sampled with replacement from the training items repeat some: near removes them.
    removed = by_dedup["near"]["data/filtered_near_duplicates"]
    assert removed > 0 and "data/filtered_near_duplicates" not in by_dedup["none"]
    assert by_dedup["near"]["data/rows"] == by_dedup["none"]["data/rows"] - removed
