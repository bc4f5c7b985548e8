"""Pairwise aggregation: both orders per prompt -> wins/ties/losses/errors, win rate, bias metrics.

Every prompt is judged twice (DESIGN.md "Contract: outputs and units", Pairwise):

* order ``candidate_first``: position A shows the candidate, position B the baseline;
* order ``baseline_first``:  position A shows the baseline,  position B the candidate.

Each order's verdict is stated in candidate/baseline terms (``"candidate"``, ``"baseline"``,
``"tie"``) or is ``None`` when the judge gave no parseable verdict after retries.  A verdict
names position A when it names the model shown first in its order: ``"candidate"`` in
``candidate_first``, ``"baseline"`` in ``baseline_first``.  ``PairVerdicts.from_positions``
converts position letters (A/B/C, as the parser returns them) into these terms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from judges.stats.intervals import clustered_standard_error

Verdict = Literal["candidate", "baseline", "tie"] | None
VERDICTS = ("candidate", "baseline", "tie")
# Per-prompt outcome score for the candidate: a win counts 1, a tie 1/2, a loss 0.
OUTCOME_SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


@dataclass(frozen=True)
class PairVerdicts:
    """The two verdicts for one prompt, in candidate/baseline terms (see module docstring)."""

    candidate_first: Verdict
    baseline_first: Verdict

    def __post_init__(self) -> None:
        for field in ("candidate_first", "baseline_first"):
            value = getattr(self, field)
            if value is not None and value not in VERDICTS:
                raise ValueError(f"PairVerdicts.{field} must be one of {VERDICTS} or None, got {value!r}")

    @classmethod
    def from_positions(cls, candidate_first: str | None, baseline_first: str | None) -> PairVerdicts:
        """Build from position letters: "A" (first shown), "B" (second shown), "C" (tie), None (error)."""
        in_order = {
            "candidate_first": {"A": "candidate", "B": "baseline", "C": "tie", None: None},
            "baseline_first": {"A": "baseline", "B": "candidate", "C": "tie", None: None},
        }
        letters = {"candidate_first": candidate_first, "baseline_first": baseline_first}
        converted = {}
        for order, letter in letters.items():
            if letter not in in_order[order]:
                raise ValueError(f"{order} verdict must be 'A', 'B', 'C' or None, got {letter!r}")
            converted[order] = in_order[order][letter]
        return cls(**converted)

    @property
    def is_error(self) -> bool:
        """An error when either order has no verdict (DESIGN.md: never dropped, counted)."""
        return self.candidate_first is None or self.baseline_first is None

    @property
    def outcome(self) -> str:
        """"win"/"loss" only when both orders name the same winner; else "tie"; "error" if missing."""
        if self.is_error:
            return "error"
        if self.candidate_first == self.baseline_first == "candidate":
            return "win"
        if self.candidate_first == self.baseline_first == "baseline":
            return "loss"
        return "tie"

    @property
    def consistent(self) -> bool:
        """Both orders gave the same verdict (tie-tie included)."""
        return not self.is_error and self.candidate_first == self.baseline_first

    @property
    def first_position_votes(self) -> int:
        """How many of the two verdicts (0, 1 or 2) name position A."""
        return int(self.candidate_first == "candidate") + int(self.baseline_first == "baseline")

    @property
    def second_position_votes(self) -> int:
        """How many of the two verdicts (0, 1 or 2) name position B."""
        return int(self.candidate_first == "baseline") + int(self.baseline_first == "candidate")

    @property
    def tie_votes(self) -> int:
        """How many of the two verdicts (0, 1 or 2) are ties."""
        return int(self.candidate_first == "tie") + int(self.baseline_first == "tie")


@dataclass(frozen=True)
class PairwiseSummary:
    """DESIGN.md's pairwise counts and rates.  Rates are None when every prompt is an error;
    first_position_rate is NaN (undefined) when no verdict names a position (an always-tie judge)."""

    n: int
    wins: int
    ties: int
    losses: int
    errors: int
    win_rate: float | None
    position_consistency: float | None
    first_position_rate: float | None
    tie_rate: float | None
    standard_error: float | None

    def as_row(self, generator: str) -> dict:
        """The JSON object of `harness judge --suite pairwise --format json`, DESIGN.md's keys exactly
        (an undefined first_position_rate is null)."""
        fields = ("n", "wins", "ties", "losses", "errors", "win_rate", "position_consistency",
                  "first_position_rate", "tie_rate")
        row = {"generator": generator, **{key: getattr(self, key) for key in fields}}
        if row["first_position_rate"] is not None and math.isnan(row["first_position_rate"]):
            row["first_position_rate"] = None
        return row

    def as_metrics(self) -> dict[str, float]:
        """All fields as floats, for MLflow; undefined (None) rates are left out."""
        return {key: float(value) for key, value in self.__dict__.items() if value is not None}


def summarize_pairs(pairs: Sequence[PairVerdicts], clusters: Sequence | None = None) -> PairwiseSummary:
    """Aggregate per-prompt verdict pairs (DESIGN.md "Contract: outputs and units", Pairwise).

    win_rate = (wins + ties/2) / (n - errors)
    position_consistency = (prompts whose two verdicts agree) / (n - errors)
    first_position_rate = (verdicts naming position A) / (verdicts naming A or B), over both orders of
        the non-error prompts (NaN when there is none: a judge that always ties has no position lean
        to measure); tie_rate = (tie verdicts) / (2 (n - errors)).
    standard_error: of win_rate, s / sqrt(m) with s the sample std (ddof=1) of the m = n - errors
        per-prompt scores (win 1, tie 1/2, loss 0), whose mean is win_rate; None when m < 2.
        With ``clusters`` (one key per pair, e.g. the prompt id when several samples of a prompt
        are judged), the cluster-robust SE of ``judges.stats.intervals.clustered_standard_error``.
    """
    outcomes = [pair.outcome for pair in pairs]
    counts = {key: outcomes.count(key) for key in ("win", "tie", "loss", "error")}
    valid = [pair for pair in pairs if not pair.is_error]
    m = len(valid)
    scores = [OUTCOME_SCORE[pair.outcome] for pair in valid]
    first = sum(pair.first_position_votes for pair in valid)
    decided = first + sum(pair.second_position_votes for pair in valid)
    if clusters is None:
        standard_error = _standard_error(scores)
    else:
        kept = [key for key, pair in zip(clusters, pairs) if not pair.is_error]
        standard_error = clustered_standard_error(scores, kept)
    return PairwiseSummary(
        n=len(pairs),
        wins=counts["win"],
        ties=counts["tie"],
        losses=counts["loss"],
        errors=counts["error"],
        win_rate=(counts["win"] + counts["tie"] / 2) / m if m else None,
        position_consistency=sum(pair.consistent for pair in valid) / m if m else None,
        first_position_rate=(first / decided if decided else math.nan) if m else None,
        tie_rate=sum(pair.tie_votes for pair in valid) / (2 * m) if m else None,
        standard_error=standard_error,
    )


def _standard_error(values: Sequence[float]) -> float | None:
    """s / sqrt(m), s the sample standard deviation (ddof=1); None for fewer than 2 values."""
    m = len(values)
    if m < 2:
        return None
    mean = math.fsum(values) / m
    variance = math.fsum((v - mean) ** 2 for v in values) / (m - 1)
    return math.sqrt(variance / m)


@dataclass(frozen=True)
class LengthBias:
    """How verdicts move with length.  Δ = len(candidate) - len(baseline), in the caller's unit.

    length_correlation: Pearson correlation between each non-error prompt's outcome score
        (win 1, tie 1/2, loss 0) and its Δ; None when either is constant or m < 2.
    longer_win_rate: among non-error prompts with Δ != 0, the outcome score of the LONGER
        answer (a win of the longer one counts 1, a tie 1/2); 0.5 means no length preference.
    mean_length_delta: mean Δ over non-error prompts.
    """

    length_correlation: float | None
    longer_win_rate: float | None
    mean_length_delta: float | None

    def as_metrics(self) -> dict[str, float]:
        return {key: float(value) for key, value in self.__dict__.items() if value is not None}


def length_bias(pairs: Sequence[PairVerdicts], length_deltas: Sequence[float]) -> LengthBias:
    """The bias report's length part, over prompts that are not errors (see LengthBias)."""
    if len(pairs) != len(length_deltas):
        raise ValueError(f"length_bias needs one length delta per prompt: {len(pairs)} pairs, "
                         f"{len(length_deltas)} deltas")
    kept = [(OUTCOME_SCORE[p.outcome], float(d)) for p, d in zip(pairs, length_deltas) if not p.is_error]
    if not kept:
        return LengthBias(None, None, None)
    scores, deltas = [s for s, _ in kept], [d for _, d in kept]
    longer = [s if d > 0 else 1.0 - s for s, d in kept if d != 0]
    return LengthBias(
        length_correlation=pearson(scores, deltas),
        longer_win_rate=math.fsum(longer) / len(longer) if longer else None,
        mean_length_delta=math.fsum(deltas) / len(deltas),
    )


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r = Σ(x-x̄)(y-ȳ) / sqrt(Σ(x-x̄)² Σ(y-ȳ)²); None when m < 2 or a side is constant.

    With x a 0/1 score this is the point-biserial correlation.
    """
    m = len(x)
    if m != len(y):
        raise ValueError(f"pearson needs equal lengths, got {m} and {len(y)}")
    if m < 2:
        return None
    mx, my = math.fsum(x) / m, math.fsum(y) / m
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = math.fsum((a - mx) ** 2 for a in x)
    syy = math.fsum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)
