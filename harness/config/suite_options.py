"""Options of the evaluation suites: the blocks ``eval.<suite>`` of a spec, and the suites' names.

``SUITE_OPTIONS`` names every suite, in the spec's order, with its options model;
each suite's record (``harness.eval.suites``) names the same model.  Each model
has one default per key, here.  Decoding keys left null inherit
``eval.generation`` (``harness.eval.generation.generation_for``).  A ``baseline`` is an
outputs file (AlpacaEval JSON list or JSONL), ``base`` (the trial's starting
model, generated on the same prompts) or the id of another trial of the same
experiment (its ``outputs/<suite>.jsonl`` artifact).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

PosInt = Annotated[int, Field(ge=1)]
NonNegFloat = Annotated[float, Field(ge=0)]
UnitFloat = Annotated[float, Field(gt=0, le=1)]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    limit: PosInt | None = Field(50, description="the first N prompts of data; null: all")
    temperature: NonNegFloat | None = None
    top_p: UnitFloat | None = None
    max_new_tokens: PosInt | None = None
    seed: int | None = None


class ArithOptions(BaseModel):
    """The `arith` suite: verifier pass@k over toy://arith-eval; null decoding keys inherit eval.generation."""

    model_config = ConfigDict(extra="forbid", strict=True)

    data: str = "toy://arith-eval"
    limit: PosInt = 200
    n: PosInt = 1
    k: Annotated[list[PosInt], Field(min_length=1)] = [1]
    temperature: NonNegFloat | None = None
    top_p: UnitFloat | None = None
    max_new_tokens: PosInt | None = None
    seed: int | None = None


class PairwiseOptions(_Options):
    """`pairwise`: both-order pairwise verdicts of the trial's outputs against a baseline's."""

    data: str = "toy://arith-eval"
    baseline: str = Field("base", description="FILE | base | TRIAL_ID")


class SingleOptions(_Options):
    """`single`: 1-10 grades of the trial's outputs."""

    data: str = "toy://arith-eval"


class AlpacaOptions(_Options):
    """`alpaca`: logprob-weighted preference against a baseline, plus the LC win rate."""

    data: str = "toy://arith-eval"
    baseline: str = "base"
    length_unit: Literal["chars", "tokens"] = "chars"


class MTBenchOptions(_Options):
    """`mtbench`: FastChat question files (multi-turn), judged pairwise or single."""

    data: str = "toy://chat-eval"
    limit: PosInt | None = Field(None, description="the first N questions of data; null: all (as FastChat)")
    mode: Literal["pairwise", "single"] = "pairwise"
    baseline: str = "base"
    reference_answers: str | None = Field(None, description="FastChat reference-answer JSONL")


class SafetyOptions(_Options):
    """`safety`: refusal of harmful prompts and over-refusal of benign ones."""

    data: str = "toy://safety-eval"
    limit: PosInt | None = None
    classifier: Literal["judge", "matcher", "both"] = "both"


class CodeOptions(_Options):
    """`code`: candidate programs run against tests in the sandbox; unbiased pass@k."""

    data: str | None = Field(None, description="null: the shipped code eval set")
    limit: PosInt | None = None
    n: PosInt = 1
    k: Annotated[list[PosInt], Field(min_length=1)] = [1]
    timeout_s: Annotated[float, Field(gt=0)] = Field(5.0, description="wall-clock limit per sample")
    memory_mb: PosInt = 512
    concurrency: PosInt | None = Field(None, description="parallel sandboxes; null: the CPU count")
    unsafe: bool = Field(False, description="run without isolation where the sandbox is unavailable")


SUITE_OPTIONS: dict[str, type[BaseModel]] = {
    "arith": ArithOptions,
    "pairwise": PairwiseOptions,
    "single": SingleOptions,
    "mtbench": MTBenchOptions,
    "alpaca": AlpacaOptions,
    "safety": SafetyOptions,
    "code": CodeOptions,
}


def pass_at_k_problems(name: str, options: BaseModel) -> list[tuple[str, str]]:
    """(key, message) for each ``k`` above ``n`` in a suite's options that have both (pass@k needs k <= n)."""
    if not {"k", "n"} <= set(type(options).model_fields):
        return []
    return [(f"eval.{name}.k[{i}]", f"must be <= eval.{name}.n ({options.n}) (value seen: {k})")
            for i, k in enumerate(options.k) if k > options.n]
