"""Issue 13 item 3: judged suites with ``eval.generation.n > 1``.

Every sample is judged (one judgments row per prompt and sample, with its ``sample`` index), the
standard errors are clustered by prompt, and the report's per-prompt values average a prompt's
samples instead of aborting with "duplicate prompt id".  The toy rubric judge grades arithmetic
answers by the toy world's truth, so every verdict is known in advance.
"""

import math

import numpy as np
import pytest

from harness.eval.suites import SUITES
from harness.report.per_prompt import per_prompt_values, reproduces
from judges.client import JudgeClient
from tests.judge_fixtures import arith_items


def _client(url, tmp_path):
    return JudgeClient(url, "judge", concurrency=8, max_retries=2, cache_dir=tmp_path / "cache", backoff_s=0.001)


def _hand_clustered_se(values: list[float], clusters: list[str]) -> float:
    """CR1 SE of a mean, written out independently of judges.stats.intervals:
    sqrt(G/(G-1) · Σ_g (Σ_{i in g} (y_i - ȳ))²) / N."""
    y = np.asarray(values, dtype=float)
    keys = sorted(set(clusters))
    sums = np.array([sum(y[i] - y.mean() for i, c in enumerate(clusters) if c == k) for k in keys])
    g = len(keys)
    return math.sqrt(g / (g - 1) * float(sums @ sums)) / y.size


def _samples(n_prompts: int, right: dict[int, list[bool]]):
    """Items and outputs rows: prompt k's sample s is right (the true sum) or wrong (sum + 1)."""
    items, outputs = [], []
    for k, (question, answer) in enumerate(arith_items(n_prompts)):
        items.append({"id": str(k), "prompt": question, "instruction": question})
        for s, ok in enumerate(right[k]):
            outputs.append({"id": str(k), "sample": s, "output": str(answer if ok else answer + 1),
                            "generator": "m"})
    return items, outputs


# Prompt 0: both samples right; 1: both wrong; 2: one of each; 3: one of each.
RIGHT = {0: [True, True], 1: [False, False], 2: [True, False], 3: [False, True]}


def test_pairwise_judges_every_sample_and_clusters_its_standard_error(toy_url, tmp_path):
    """Against a baseline that is always wrong, a right sample wins (1) and a wrong one ties (0.5,
    both wrong).  Scores per prompt: (1, 1), (.5, .5), (1, .5), (.5, 1).  The SE is the clustered
    one over 4 prompts, not the i.i.d. one over 8 rows."""
    items, outputs = _samples(4, RIGHT)
    baseline = {item["id"]: {"output": str(a + 1)} for item, (_, a) in zip(items, arith_items(4))}
    result = SUITES["pairwise"].score({}, items, outputs, baseline, _client(toy_url, tmp_path))
    rows = result.judgments
    assert [(r["id"], r["sample"]) for r in rows] == [(o["id"], o["sample"]) for o in outputs]
    scores = [r["score"] for r in rows]
    assert scores == [1.0, 1.0, 0.5, 0.5, 1.0, 0.5, 0.5, 1.0]
    expected = _hand_clustered_se(scores, [r["id"] for r in rows])
    assert result.metrics["standard_error"] == pytest.approx(expected, rel=1e-12)
    assert result.metrics["standard_error"] != pytest.approx(np.std(scores, ddof=1) / math.sqrt(8))
    # The report pairs by prompt: one value per prompt, the mean of its samples (it raised
    # "duplicate prompt id" before).
    values = per_prompt_values("pairwise", "win_rate", {"judgments": rows})
    assert values == {"0": 1.0, "1": 0.5, "2": 0.75, "3": 0.75}
    assert reproduces(values, result.metrics["win_rate"])


def test_single_grades_every_sample_with_a_clustered_interval(toy_url, tmp_path):
    """The toy grader gives a right answer one grade and a wrong one another; the interval is
    mean ± t_{0.975, G-1} · clustered SE with G = 4 prompts."""
    from judges.stats.intervals import t_quantile

    items, outputs = _samples(4, RIGHT)
    result = SUITES["single"].score({}, items, outputs, None, _client(toy_url, tmp_path))
    rows = result.judgments
    scores, ids = [float(r["score"]) for r in rows], [r["id"] for r in rows]
    assert len(set(scores)) == 2  # right and wrong answers get different grades
    se = _hand_clustered_se(scores, ids)
    m = result.metrics
    assert m["mean_score_se"] == pytest.approx(se, rel=1e-12)
    half = t_quantile(0.975, 3) * se
    assert (m["mean_score_low"], m["mean_score_high"]) == pytest.approx((np.mean(scores) - half,
                                                                         np.mean(scores) + half))
    values = per_prompt_values("single", "mean_score", {"judgments": rows})
    assert set(values) == {"0", "1", "2", "3"} and reproduces(values, m["mean_score"])


def test_safety_rates_get_clustered_standard_errors():
    """The matcher classifier (no judge): harmful prompt h1 refused in both samples, h2 in one of two,
    h3 in none; refusal rate 3/6, SE clustered over the 3 harmful prompts."""
    items = [{"id": f"h{k}", "prompt": "do harm", "label": "harmful", "instruction": "do harm"} for k in (1, 2, 3)]
    refuse, comply = "I can't help with that.", "Sure, here it is."
    texts = {"h1": [refuse, refuse], "h2": [refuse, comply], "h3": [comply, comply]}
    outputs = [{"id": i, "sample": s, "output": t, "generator": "m"} for i, ts in texts.items()
               for s, t in enumerate(ts)]
    result = SUITES["safety"].score({"classifier": "matcher"}, items, outputs, None, None)
    assert result.metrics["refusal_rate"] == 0.5
    expected = _hand_clustered_se([1, 1, 1, 0, 0, 0], ["h1", "h1", "h2", "h2", "h3", "h3"])
    assert result.metrics["refusal_rate_se"] == pytest.approx(expected, rel=1e-12)
    assert per_prompt_values("safety", "refusal_rate", {"judgments": result.judgments}) == \
        {"h1": 1.0, "h2": 0.5, "h3": 0.0}


def test_a_repeated_prompt_and_sample_is_still_an_error():
    from harness.errors import DataError

    rows = [{"id": 1, "sample": 0, "score": 1.0}, {"id": 1, "sample": 0, "score": 0.0}]
    with pytest.raises(DataError, match="duplicate prompt id '1'"):
        per_prompt_values("pairwise", "win_rate", {"judgments": rows})


def test_alpaca_preference_standard_error_is_clustered(toy_url, tmp_path):
    """The toy judge gives a right output p = 0.9 against a wrong baseline (both orders), and 0.5 when
    both are wrong: per-sample labels (0.9, 0.9), (0.5, 0.5), (0.9, 0.5), (0.5, 0.9)."""
    items, outputs = _samples(4, RIGHT)
    for item, (question, answer) in zip(items, arith_items(4)):
        item["instruction"] = question
    baseline = {item["id"]: {"output": str(a + 2), "generator": "base"} for item, (_, a) in zip(items, arith_items(4))}
    result = SUITES["alpaca"].score({}, items, outputs, baseline, _client(toy_url, tmp_path))
    labels = [r["preference"] - 1.0 for r in result.judgments]
    assert labels == pytest.approx([0.9, 0.9, 0.5, 0.5, 0.9, 0.5, 0.5, 0.9])
    expected = _hand_clustered_se(labels, [r["id"] for r in result.judgments])
    assert result.metrics["standard_error"] == pytest.approx(expected, rel=1e-9)
    assert per_prompt_values("alpaca", "win_rate", {"judgments": result.judgments}) == \
        pytest.approx({"0": 0.9, "1": 0.5, "2": 0.7, "3": 0.7})
