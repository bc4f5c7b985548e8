"""Report estimators and per-prompt extraction on hand-worked inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from harness.errors import DataError
from harness.report.per_prompt import per_prompt_values, reproduces
from harness.report.stats import holm, paired_bootstrap, summarize, welch


def test_holm_hand_example():
    """p = (0.01, 0.04, 0.03, 0.2), m = 4: sorted 0.01, 0.03, 0.04, 0.2 get 4·0.01 = 0.04, 3·0.03 = 0.09,
    2·0.04 = 0.08 -> raised to the running max 0.09, 1·0.2 = 0.2.  NaN (an untested comparison) is not counted."""
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    out = holm([0.02, float("nan"), 0.5])
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.5)
    assert holm([0.6, 0.7]) == [1.0, 1.0]


def test_summary_t_interval_and_single_seed():
    """x = (1, 2, 3): mean 2, s = 1, half-width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321 = 2.4841."""
    s = summarize([1.0, 2.0, 3.0])
    assert (s.mean, s.std) == (2.0, 1.0)
    assert s.ci_high - 2.0 == pytest.approx(sps.t.ppf(0.975, 2) / math.sqrt(3)) == pytest.approx(2.4841, abs=1e-4)
    one = summarize([0.3])
    assert one.n == 1 and one.mean == 0.3 and math.isnan(one.ci_low)


def test_welch_needs_two_seeds_each():
    c = welch([1.0], [0.0, 1.0])
    assert c.diff == pytest.approx(0.5) and math.isnan(c.p) and c.test.startswith("none")


def test_paired_bootstrap_all_equal_and_constant_shift():
    same = paired_bootstrap([1, 0, 1], [1, 0, 1], b=500)
    assert same.diff == 0 and math.isnan(same.p)  # no spread: the paired t is undefined, not p = 1 or 0
    shift = paired_bootstrap([1, 1, 1, 1], [0, 0, 0, 0], b=500)
    assert (shift.diff, shift.ci_low, shift.ci_high) == (1.0, 1.0, 1.0) and math.isnan(shift.p)
    rng = np.random.default_rng(0)
    a, b = rng.random(50), rng.random(50)
    assert paired_bootstrap(a, b).p == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-9)  # no 1/(B+1) floor
    assert paired_bootstrap(a, b).ci_low == paired_bootstrap(a, b).ci_low  # fixed seed: reproducible


def test_per_prompt_shapes_of_every_suite():
    arith = {"judgments": [{"id": 1, "scores": [1, 0, 0, 1]}, {"id": 2, "scores": [0, 0, 0, 0]}]}
    assert per_prompt_values("arith", "pass_at_1", arith) == {"1": 0.5, "2": 0.0}
    assert per_prompt_values("arith", "pass_at_2", arith) == {"1": pytest.approx(1 - 1 / 6), "2": 0.0}
    assert per_prompt_values("arith", "pass_at_8", arith) is None  # k > n
    pairwise = {"judgments": [{"id": "a", "score": 1.0}, {"id": "b", "score": 0.5}, {"id": "c", "score": None}]}
    values = per_prompt_values("pairwise", "win_rate", pairwise)
    assert values == {"a": 1.0, "b": 0.5}  # the error prompt has no value, as in win_rate's n - errors
    assert reproduces(values, 0.75) and not reproduces(values, 0.7)
    assert per_prompt_values("pairwise", "position_consistency", pairwise) is None
    alpaca = {"judgments": [{"id": 0, "preference": 1.8}, {"id": 1, "preference": None}]}
    assert per_prompt_values("alpaca", "win_rate", alpaca) == {"0": pytest.approx(0.8)}
    safety = {"judgments": [{"id": 0, "label": "harmful", "refused": True}, {"id": 1, "label": "benign",
                                                                              "refused": True}]}
    assert per_prompt_values("safety", "refusal_rate", safety) == {"0": 1.0}
    assert per_prompt_values("safety", "over_refusal_rate", safety) == {"1": 1.0}
    outputs = {"outputs": [{"id": 0, "num_tokens": 4}, {"id": 0, "num_tokens": 6}, {"id": 1, "num_tokens": 3}]}
    assert per_prompt_values("arith", "response_length", outputs) == {"0": 5.0, "1": 3.0}
    explicit = {"judgments": [{"id": 0, "scores": {"custom": 0.25}}]}
    assert per_prompt_values("mysuite", "custom", explicit) == {"0": 0.25}


def test_duplicate_or_missing_ids_are_errors():
    with pytest.raises(DataError, match=r"judgments/arith.jsonl:2: field 'id': duplicate prompt id '1'"):
        per_prompt_values("arith", "pass_at_1", {"judgments": [{"id": 1, "scores": [1]}, {"id": 1, "scores": [0]}]})
    with pytest.raises(DataError, match="field 'id': missing"):
        per_prompt_values("arith", "pass_at_1", {"judgments": [{"scores": [1]}]})


def test_latest_trials_keeps_one_run_per_trial_with_its_stages():
    """Trial t0 logged by two sweeps: the newer FINISHED run and its stage stay; a newer FAILED one does not win."""
    import pandas as pd

    from harness.report.frame import latest_trials

    runs = pd.DataFrame([
        # run_id, status, start_time, trial id, parent
        ("sweepA", "FINISHED", 1, None, None),
        ("old", "FINISHED", 2, "t0", "sweepA"),
        ("old-sft", "FINISHED", 3, None, "old"),
        ("new", "FINISHED", 10, "t0", "sweepB"),
        ("new-sft", "FINISHED", 11, None, "new"),
        ("broken", "FAILED", 20, "t0", "sweepC"),
        ("other", "FAILED", 5, "t1", "sweepA"),
    ], columns=["run_id", "status", "start_time", "tags.harness.trial_id", "tags.mlflow.parentRunId"])
    runs["experiment"] = "e"
    assert list(latest_trials(runs)["run_id"]) == ["sweepA", "new", "new-sft", "other"]
    once = runs[runs["run_id"].isin(["sweepA", "old", "old-sft"])]
    assert latest_trials(once) is once  # nothing duplicated: unchanged


def test_a_trial_renamed_by_a_new_axis_is_counted_once():
    """A second sweep added an axis (``max_steps40``): same config hash, so the older run and its stage go."""
    import pandas as pd

    from harness.report.frame import latest_trials, trial_config

    assert trial_config("dpo-max_steps40-seed0-916dea54") == trial_config("dpo-seed0-916dea54") == "916dea54"
    assert trial_config("base") == "base"
    runs = pd.DataFrame([
        ("old", "FINISHED", 2, "dpo-seed0-916dea54", "sweepA"),
        ("old-sft", "FINISHED", 3, None, "old"),
        ("new", "FINISHED", 10, "dpo-max_steps40-seed0-916dea54", "sweepB"),
        ("new80", "FINISHED", 12, "dpo-max_steps80-seed0-efc963e5", "sweepB"),
        ("base1", "FINISHED", 1, "base", "sweepA"),
        ("base2", "FINISHED", 9, "base", "sweepB"),
    ], columns=["run_id", "status", "start_time", "tags.harness.trial_id", "tags.mlflow.parentRunId"])
    runs["experiment"] = "e"
    assert sorted(latest_trials(runs)["run_id"]) == ["base2", "new", "new80"]


def test_bookkeeping_metrics_are_not_outcomes():
    import pandas as pd

    from harness.report.collect import outcome_metrics

    names = ["eval/pairwise/win_rate", "eval/pairwise/judge_calls", "eval/pairwise/judge_cache_hits",
             "eval/alpaca/lc_win_rate", "eval/alpaca/lc_joint_models", "eval/alpaca/lc_standard_error_joint",
             "eval/arith/num_prompts", "eval/arith/pass_at_1_se", "eval/pairwise/style_coef/length",
             "eval/mtbench/turn1/n", "eval/mtbench/turn1/wins", "eval/mtbench/turn1/win_rate",
             "eval/single/math/mean_score"]
    rows = pd.DataFrame([[1.0] * len(names)], columns=[f"metrics.{n}" for n in names])
    assert outcome_metrics(rows) == ["eval/alpaca/lc_win_rate", "eval/mtbench/turn1/win_rate", "eval/pairwise/win_rate",
                                     "eval/single/math/mean_score"]
    assert "eval/pairwise/judge_calls" in outcome_metrics(rows, counts=True)


def test_an_ablated_mapping_is_one_axis_in_spec_order():
    import json

    import pandas as pd

    from harness.report.frame import axes_and_levels

    levels = [{"name": "dpo", "beta": 0.1}, {"name": "ipo", "beta": 0.1}]
    trials = pd.DataFrame({"params.stages.pref.method": [json.dumps(v) for v in reversed(levels)],
                           "params.stages.pref.method.name": ["ipo", "dpo"]})
    spec = {"ablate": {"stages.pref.method": levels}}
    assert axes_and_levels(trials, spec) == {"params.stages.pref.method": [json.dumps(v) for v in levels]}
