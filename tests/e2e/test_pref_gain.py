"""A preference method raising pass@1 over its SFT start (slow: a few minutes on 2 cores).

Checks the README's claim from experiments/pref-hedged.yaml on one seed:
DPO with mean log-probabilities on toy://arith-pairs-hedged raises the hedged
SFT model's pass@1 by more than twice the standard error of the difference, on
500 prompts. (Measured over seeds 0-2: +0.117, 95% t-interval [+0.106, +0.127].)
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from harness.cli import main

SPEC = Path(__file__).resolve().parents[2] / "experiments" / "pref-hedged.yaml"
DPO_MEAN = "{stages.pref.method: [{name: dpo, beta: 0.1, logprob_reduction: mean}]}"


@pytest.mark.slow
def test_dpo_raises_pass_at_1_over_its_sft_start(results_sharing_toy_models):
    results = results_sharing_toy_models
    args = ["sweep", str(SPEC), "--set", "seeds=[0]", "--set", f"ablate={DPO_MEAN}"]
    assert main([*args, "--set", f"results_dir={results}"]) == 0
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("pref-hedged").experiment_id])
    (trial,) = [r for r in runs if "harness.trial_id" in r.data.tags and r.data.tags["harness.trial_id"] != "base"]
    (sft,) = [r for r in runs if r.data.tags.get("harness.stage") == "sft"]
    assert sft.data.tags["mlflow.parentRunId"] == trial.info.run_id
    start, end = sft.data.metrics, trial.data.metrics
    assert start["eval/arith/num_prompts"] == end["eval/arith/num_prompts"] == 500
    gain = end["eval/arith/pass_at_1"] - start["eval/arith/pass_at_1"]
    se = math.hypot(end["eval/arith/pass_at_1_se"], start["eval/arith/pass_at_1_se"])
    assert gain > 2 * se, (gain, se)
    # The gain comes with the planted hedge gone: answers shrink from "42, I am 90% sure." to "42".
    assert end["eval/arith/response_length"] < 0.5 * start["eval/arith/response_length"]
