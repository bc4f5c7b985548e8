"""kto, rm and iw-sft end to end through `harness sweep` on toy://micro: metrics, tags, caches, RM reuse."""

from __future__ import annotations

import json

import torch
import yaml
from mlflow.tracking import MlflowClient
from transformers import AutoModelForSequenceClassification

from harness.cli import main
from harness.data.load import load_rows, take_fraction
from tests.logged import logged_total


def _sweep(tmp_path, name: str, **top) -> list:
    spec = {"name": name, "results_dir": str(tmp_path / "results"), "model": "toy://micro",
            "train": {"batch_size": 4, "max_length": 64, "max_steps": 2, "lr": 1e-3, "log_every": 1}, **top}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path)]) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], "tags.`harness.trial_id` != ''")


def test_kto_beta_sweep_on_pairs_computes_references_once(tmp_path):
    """Pairs convert to KTO rows; two betas share one pass for own completions and one for the KL pairs."""
    runs = _sweep(tmp_path, "kto", method={"name": "kto"}, data={"train": "toy://arith-pairs", "fraction": 0.003},
                  ablate={"method.beta": [0.1, 0.5]})
    results = tmp_path / "results"
    assert logged_total(results, "train/reference_passes") == 2
    assert logged_total(results, "train/optimizer_steps") == 4
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags["harness.kl_estimator"].startswith("kto z0")
        for key in ("train/loss", "train/kl", "train/rewards/chosen", "train/rewards/rejected", "train/entropy"):
            assert key in run.data.metrics, key
        assert run.data.metrics["train/kl"] >= 0


def _eval_file(tmp_path) -> str:
    rows = take_fraction(load_rows("toy://arith-pairs", "pairs"), 0.004, 1)[:8]
    path = tmp_path / "held_out.jsonl"
    path.write_text("".join(json.dumps({**r.data, "margin": 0.1}) + "\n" for r in rows))
    return str(path)


def test_rm_trains_validates_saves_and_serves_iw_sft(tmp_path):
    held_out = _eval_file(tmp_path)
    (rm_run,) = _sweep(tmp_path, "rm", method={"name": "rm", "pooling": "mean"},
                       data={"train": "toy://arith-pairs", "fraction": 0.003, "eval": held_out})
    metrics = rm_run.data.metrics
    for key in ("train/rewards/accuracy", "train/rewards/margin", "train/rewards/std", "val/loss",
                "val/rewards/accuracy", "val/rewards/mean"):
        assert key in metrics, key
    checkpoint = rm_run.data.tags["harness.checkpoint"]
    rm = AutoModelForSequenceClassification.from_pretrained(checkpoint)
    assert rm.config.harness_pooling == "mean" and rm.config.num_labels == 1
    (iw_run,) = _sweep(tmp_path, "iw", method={"name": "iw-sft", "reward_model": checkpoint, "tau": 0.5},
                       data={"train": "toy://arith-sft", "fraction": 0.002})
    assert logged_total(tmp_path / "results", "train/reward_passes") == 1
    assert torch.isfinite(torch.tensor(iw_run.data.metrics["train/loss"]))


def test_rm_stage_refuses_eval_suites(tmp_path, capsys):
    spec = {"name": "bad", "results_dir": str(tmp_path / "results"), "model": "toy://micro",
            "method": {"name": "rm"}, "data": {"train": "toy://arith-pairs"}, "eval": {"suites": ["arith"]}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path)]) != 0
    assert "cannot generate" in capsys.readouterr().err
