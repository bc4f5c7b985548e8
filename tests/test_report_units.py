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
    assert same.diff == 0 and same.p == 1.0
    shift = paired_bootstrap([1, 1, 1, 1], [0, 0, 0, 0], b=500)
    # every resample has d* = 1 = d̂, so no |d* - d̂| >= 1: p = 1 / (B + 1)
    assert (shift.diff, shift.ci_low, shift.ci_high) == (1.0, 1.0, 1.0) and shift.p == pytest.approx(1 / 501)
    rng = np.random.default_rng(0)
    a, b = rng.random(50), rng.random(50)
    assert paired_bootstrap(a, b).p == paired_bootstrap(a, b).p  # fixed seed: reproducible


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
