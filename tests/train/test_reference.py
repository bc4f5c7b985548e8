"""The reference log-prob cache: a sweep over beta (or the reduction) computes reference log-probs once.

Proven by counting the reference passes each stage reports (``train/reference_passes``), never by timing.
"""

from __future__ import annotations

import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness.cli import main
from tests.logged import logged_total


def _sweep(tmp_path, method: dict, ablate: dict, data: str = "toy://arith-pairs") -> MlflowClient:
    spec = {
        "name": "refcache", "results_dir": str(tmp_path / "results"), "model": "toy://micro",
        "method": method, "data": {"train": data, "fraction": 0.003},
        "train": {"batch_size": 4, "max_length": 64, "max_steps": 1, "lr": 1e-4}, "ablate": ablate,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path)]) == 0
    return MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")


@pytest.mark.parametrize("method", ["ipo"])  # dpo: tests/test_sweep.py
def test_beta_and_reduction_sweep_computes_reference_once(tmp_path, method):
    """4 trials (2 betas x sum/mean): one reference pass; the cache holds sums and counts for both reductions."""
    client = _sweep(tmp_path, {"name": method},
                    {"method.beta": [0.1, 0.5], "method.logprob_reduction": ["sum", "mean"]})
    assert logged_total(tmp_path / "results", "train/optimizer_steps") == 4
    assert logged_total(tmp_path / "results", "train/reference_passes") == 1
    exp = client.get_experiment_by_name("refcache")
    trials = client.search_runs([exp.experiment_id], "tags.`harness.trial_id` != ''")
    assert len(trials) == 4
    for run in trials:
        assert "train/kl" in run.data.metrics and "train/rewards/accuracy" in run.data.metrics
        assert run.data.tags["harness.kl_estimator"].startswith("k1")
