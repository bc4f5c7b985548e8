"""Pairwise aggregation (DESIGN.md "Contract: outputs and units", Pairwise) and the length-bias report."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from judges.stats.winrate import PairVerdicts, length_bias, pearson, summarize_pairs

C, B, T = "candidate", "baseline", "tie"


def test_hand_computed_summary():
    """Six prompts, one of each kind:
    (C, C) win, consistent, 1 A-vote | (B, B) loss, consistent, 1 A-vote
    (C, B) tie (both say "A"), 2 A-votes | (T, T) tie, consistent, 0 | (None, C) error
    (B, C) tie (both say "B"), 0 A-votes.
    m = n - errors = 5; win_rate = (1 + 3/2) / 5 = 0.5; consistency = 3/5;
    verdicts naming A: 1 + 1 + 2 + 0 + 0 = 4, naming B: 1 + 1 + 0 + 0 + 2 = 4, ties: 0 + 0 + 0 + 2 + 0 = 2;
    first_position_rate = 4 / (4 + 4) = 0.5 (ties left out); tie_rate = 2 / (2 * 5) = 0.2;
    scores 1, 0, .5, .5, .5: s^2 = (.25 + .25) / 4 = .125, SE = sqrt(.125 / 5) = sqrt(.025).
    """
    pairs = [PairVerdicts(C, C), PairVerdicts(B, B), PairVerdicts(C, B), PairVerdicts(T, T),
             PairVerdicts(None, C), PairVerdicts(B, C)]
    s = summarize_pairs(pairs)
    assert (s.n, s.wins, s.ties, s.losses, s.errors) == (6, 1, 3, 1, 1)
    assert s.win_rate == pytest.approx(0.5)
    assert s.position_consistency == pytest.approx(0.6)
    assert s.first_position_rate == pytest.approx(0.5)
    assert s.tie_rate == pytest.approx(0.2)
    assert s.standard_error == pytest.approx(math.sqrt(0.025))
    row = s.as_row("m1")
    assert list(row) == ["generator", "n", "wins", "ties", "losses", "errors", "win_rate",
                             "position_consistency", "first_position_rate", "tie_rate"]


def test_first_position_rate_leaves_ties_out():
    """Issue 13 item 5.  A judge that says "A" in one order and tie in the other names position A
    in every verdict that names a position: rate 1 (it read 0.5 = 2/(2·2) with ties in the
    denominator).  An always-tie judge names no position: undefined (NaN, JSON null), not 0.0;
    its tie rate is 1."""
    a_or_tie = summarize_pairs([PairVerdicts(C, T), PairVerdicts(T, B)])
    assert a_or_tie.first_position_rate == 1.0 and a_or_tie.tie_rate == 0.5
    always_tie = summarize_pairs([PairVerdicts(T, T)] * 3)
    assert math.isnan(always_tie.first_position_rate) and always_tie.tie_rate == 1.0
    assert math.isnan(always_tie.as_metrics()["first_position_rate"])
    assert always_tie.as_row("m")["first_position_rate"] is None


def test_clustered_standard_error_by_hand():
    """Issue 13 item 3: two samples of each of 3 prompts, scores (1, 1), (0, 0.5), (0.5, 0.5).
    N = 6, ȳ = 3.5/6 = 7/12; per-prompt sums of (y - ȳ): 2 - 14/12 = 10/12, 0.5 - 14/12 = -8/12,
    1 - 14/12 = -2/12; Σ sums² = (100 + 64 + 4)/144 = 168/144; G = 3:
    SE² = 3/2 · 168/144 / 36 = 252/5184, SE = √(252/5184) = 0.22048...
    The naive SE treats the 6 samples as independent: s/√6 with s² = Σ(y-ȳ)²/5."""
    from judges.stats.intervals import clustered_standard_error

    pairs = [PairVerdicts(C, C), PairVerdicts(C, C), PairVerdicts(B, B), PairVerdicts(T, T),
             PairVerdicts(C, B), PairVerdicts(T, T)]
    prompts = ["p1", "p1", "p2", "p2", "p3", "p3"]
    s = summarize_pairs(pairs, clusters=prompts)
    assert s.win_rate == pytest.approx(7 / 12)
    assert s.standard_error == pytest.approx(math.sqrt(252 / 5184), rel=1e-12)
    y = np.array([1, 1, 0, 0.5, 0.5, 0.5])
    assert summarize_pairs(pairs).standard_error == pytest.approx(y.std(ddof=1) / math.sqrt(6))
    # One value per cluster: the plain ddof-1 SE.
    assert clustered_standard_error(list(y), list(range(6))) == pytest.approx(y.std(ddof=1) / math.sqrt(6))
    assert clustered_standard_error([1.0, 0.0], ["p", "p"]) is None


def test_from_positions_maps_letters_per_order():
    """"A" is the candidate in the candidate-first order and the baseline in the other one."""
    assert PairVerdicts.from_positions("A", "A") == PairVerdicts(C, B)  # always first: a tie
    assert PairVerdicts.from_positions("A", "B") == PairVerdicts(C, C)  # candidate both times
    assert PairVerdicts.from_positions("B", "A") == PairVerdicts(B, B)
    assert PairVerdicts.from_positions("C", None) == PairVerdicts(T, None)
    assert PairVerdicts.from_positions("A", "A").first_position_votes == 2
    with pytest.raises(ValueError, match="baseline_first.*'D'"):
        PairVerdicts.from_positions("A", "D")
    with pytest.raises(ValueError, match="candidate_first"):
        PairVerdicts("winner", None)


def test_all_errors_gives_counts_and_no_rates():
    s = summarize_pairs([PairVerdicts(None, None), PairVerdicts(C, None)])
    assert (s.n, s.errors, s.win_rate, s.position_consistency, s.first_position_rate, s.tie_rate) == \
        (2, 2, None, None, None, None)
    assert s.as_metrics() == {"n": 2.0, "wins": 0.0, "ties": 0.0, "losses": 0.0, "errors": 2.0}


verdicts = st.sampled_from([C, B, T, None])


@given(st.lists(st.tuples(verdicts, verdicts), max_size=60))
def test_every_prompt_is_accounted_for(raw):
    s = summarize_pairs([PairVerdicts(a, b) for a, b in raw])
    assert s.wins + s.ties + s.losses + s.errors == s.n == len(raw)
    if s.n > s.errors:
        assert 0.0 <= s.win_rate <= 1.0 and 0.0 <= s.tie_rate <= 1.0
        assert math.isnan(s.first_position_rate) or 0.0 <= s.first_position_rate <= 1.0
        assert 0.0 <= s.position_consistency <= 1.0


def _biased_judge_pairs(rng, n, true_rate, bias):
    """Each prompt's true winner is the candidate w.p. true_rate; in each order the judge says
    "position A" w.p. bias, otherwise it names the true winner."""
    truth_is_candidate = rng.random(n) < true_rate
    lazy = rng.random((n, 2)) < bias
    true_verdict = np.where(truth_is_candidate, C, B)
    first = np.where(lazy[:, 0], C, true_verdict)   # candidate shown first
    second = np.where(lazy[:, 1], B, true_verdict)  # baseline shown first
    return [PairVerdicts(str(a), str(b)) for a, b in zip(first, second)]


@pytest.mark.parametrize("true_rate,bias", [(0.8, 0.3), (0.3, 0.1), (0.5, 0.5)])
def test_position_bias_simulation(true_rate, bias):
    """DESIGN.md: E[win_rate] = 0.5 + (1-b)(W-0.5), position_consistency = 1-b, and each order
    names A w.p. b + (1-b)·P(true winner shown first), so first_position_rate = 0.5 + b/2.
    Tolerance: 4 standard errors of each estimate at this n (exact per-prompt variances)."""
    n = 20_000
    s = summarize_pairs(_biased_judge_pairs(np.random.default_rng(0), n, true_rate, bias))
    p_win, p_tie = true_rate * (1 - bias), bias
    expected_wr = 0.5 + (1 - bias) * (true_rate - 0.5)
    var_wr = p_win + p_tie / 4 - expected_wr**2
    assert expected_wr == pytest.approx(p_win + p_tie / 2)
    assert abs(s.win_rate - expected_wr) < 4 * math.sqrt(var_wr / n)
    assert abs(s.position_consistency - (1 - bias)) < 4 * math.sqrt(bias * (1 - bias) / n)
    assert abs(s.first_position_rate - (0.5 + bias / 2)) < 4 * 0.5 / math.sqrt(n)
    assert abs(s.standard_error - math.sqrt(var_wr / n)) < 0.05 * math.sqrt(var_wr / n)


def test_pearson_matches_numpy():
    rng = np.random.default_rng(1)
    x, y = rng.random(50), rng.normal(size=50)
    assert pearson(list(x), list(y)) == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert pearson([1.0], [2.0]) is None


def test_length_bias_hand_computed():
    """Outcomes win, loss, tie, win and one error; Δ = 30, -10, 0, 20 (error's Δ ignored).
    Scores 1, 0, .5, 1 vs Δ: r from numpy; longer answer wins at Δ=30 (1), Δ=-10 (baseline longer,
    baseline won: 1), Δ=20 (1); the tie at Δ=0 is left out: longer_win_rate = 1.  mean Δ = 10."""
    pairs = [PairVerdicts(C, C), PairVerdicts(B, B), PairVerdicts(T, T), PairVerdicts(C, C),
             PairVerdicts(None, B)]
    report = length_bias(pairs, [30, -10, 0, 20, 999])
    assert report.length_correlation == pytest.approx(np.corrcoef([1, 0, 0.5, 1], [30, -10, 0, 20])[0, 1])
    assert report.longer_win_rate == 1.0
    assert report.mean_length_delta == pytest.approx(10.0)
    with pytest.raises(ValueError, match="one length delta per prompt"):
        length_bias(pairs, [1, 2])


def test_length_bias_of_verbosity_biased_judge_is_positive_and_unbiased_is_near_zero():
    """A judge that prefers the longer answer w.p. 0.8 shows r > 0.3 and longer_win_rate ~ 0.8
    (both orders pick the longer one w.p. .64, the shorter w.p. .04: .64 + .32/2 = .8);
    a coin-flip judge shows |r| < 4/sqrt(n)."""
    rng = np.random.default_rng(2)
    n = 4000
    deltas = rng.normal(0, 100, n)
    longer = np.where(deltas > 0, C, B)
    shorter = np.where(deltas > 0, B, C)
    picks = rng.random((n, 2)) < 0.8
    biased = [PairVerdicts(str(a), str(b)) for a, b in zip(np.where(picks[:, 0], longer, shorter),
                                                           np.where(picks[:, 1], longer, shorter))]
    report = length_bias(biased, list(deltas))
    assert report.length_correlation > 0.3
    assert abs(report.longer_win_rate - 0.8) < 4 * 0.4 / math.sqrt(n)
    coin = rng.random((n, 2)) < 0.5
    fair = [PairVerdicts(C if a else B, C if b else B) for a, b in coin]
    assert abs(length_bias(fair, list(deltas)).length_correlation) < 4 / math.sqrt(n)
