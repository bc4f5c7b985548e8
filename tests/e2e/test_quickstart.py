"""The quickstart end to end (slow: minutes on 2 cores; builds toy://tiny unless test_pref_gain did, see conftest).

Checks the claim the README makes: SFT's pass@1 exceeds the base model's by
more than twice the standard error of the difference, on 500 prompts.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from harness.cli import main
from tests.logged import steps

SPEC = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"


@pytest.mark.slow
def test_quickstart_sft_beats_base(results_sharing_toy_models):
    results = results_sharing_toy_models
    assert main(["sweep", str(SPEC), "--set", f"results_dir={results}"]) == 0
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    base = next(r for r in runs if r.data.tags.get("harness.trial_id") == "base").data.metrics
    sft = next(r for r in runs if r.data.tags.get("harness.stage") == "sft").data.metrics
    assert base["eval/arith/num_prompts"] == sft["eval/arith/num_prompts"] == 500
    gap = sft["eval/arith/pass_at_1"] - base["eval/arith/pass_at_1"]
    se = math.hypot(sft["eval/arith/pass_at_1_se"], base["eval/arith/pass_at_1_se"])
    assert gap > 2 * se, (gap, se)
    dpo_trials = [r for r in runs if r.data.tags.get("harness.method") == "dpo" and "harness.trial_id" in r.data.tags]
    assert len(dpo_trials) == 2 and all("eval/arith/pass_at_1" in r.data.metrics for r in dpo_trials)

    before = steps(results)
    assert main(["sweep", str(SPEC), "--set", f"results_dir={results}"]) == 0
    assert steps(results) == before
    assert len(client.search_runs([runs[0].info.experiment_id])) == len(runs)
