"""A method's inputs besides the policy's own log-probs: per example, per optimizer step, per micro-batch.

``ExampleSet`` is what ``train`` trains on: a stage's encoded examples, the
pad id that collates them, and the per-example inputs its batch kind's
prepare hook made before training (``harness.train.kinds``): reference
statistics, the KTO KL partners' reference log-probs, IW-SFT log-weights,
RM margins.  A new input is a new field here, not a parameter of ``train``.

DESIGN.md, "Optimizer-step normalization": quantities relative to the batch
(the KTO KL estimate, IW-SFT weights) use the step's *whole* batch, so the
loop makes a ``StepInputs`` once per step, before any micro-batch, and hands
each micro-batch its ``BatchInputs`` slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from harness.config.grid import StageSpec
from harness.data.load import load_rows
from harness.errors import HarnessError
from harness.methods import self_normalized_weights


@dataclass
class ExampleSet:
    """Encoded examples and their per-example inputs (each [N, ...] or None when the method has none)."""

    examples: list
    pad_id: int
    ref: torch.Tensor | None = None  # reference statistics: pairs [N, 4], KTO [N, 2] (sums and counts)
    kl_ref: dict | None = None  # KTO: {(i, j): (sum, count)} reference of each mismatched pair of the plan
    log_weights: torch.Tensor | None = None  # IW-SFT [N] log-weights
    margins: torch.Tensor | None = None  # RM [N] required margins

    def __len__(self) -> int:
        return len(self.examples)


@dataclass
class StepState:
    """What persists across steps: the KTO estimates so far (for steps with one example)."""

    kl_history: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class StepInputs:
    """Batch-relative inputs of one optimizer step."""

    kl: float | None = None  # KTO z0
    weights: dict[int, float] | None = None  # example index -> self-normalized IW-SFT weight


@dataclass(frozen=True)
class BatchInputs:
    """One micro-batch's inputs, rows in the micro-batch's order: what a batch kind's forward reads."""

    ref: torch.Tensor | None = None  # [B, k] reference statistics
    kl: float | None = None
    weights: torch.Tensor | None = None  # [B] float64
    margins: torch.Tensor | None = None  # [B] float64


def batch_inputs(data: ExampleSet, step: StepInputs, share: list[int]) -> BatchInputs:
    """The slice of ``data`` and ``step`` for the micro-batch of examples ``share``."""
    weights = None
    if step.weights is not None:
        weights = torch.tensor([step.weights[i] for i in share], dtype=torch.float64)
    return BatchInputs(
        ref=data.ref[share] if data.ref is not None else None,
        kl=step.kl,
        weights=weights,
        margins=data.margins[share] if data.margins is not None else None,
    )


def weighted_step_inputs(model, method, params: dict, data: ExampleSet, step: list[int], state: StepState,
                         device) -> StepInputs:
    """SFT kinds: the step's IW-SFT weights, self-normalized over the step, when the examples carry any."""
    if data.log_weights is None:
        return StepInputs()
    normalized = self_normalized_weights(data.log_weights[step])
    return StepInputs(weights=dict(zip(step, normalized.tolist())))


def no_step_inputs(model, method, params: dict, data: ExampleSet, step: list[int], state: StepState,
                   device) -> StepInputs:
    """Kinds without batch-relative inputs."""
    return StepInputs()


def example_margins(examples: list) -> torch.Tensor | None:
    """RM margins [N] from the rows' ``margin`` field (0 where absent), or None when no row has one."""
    margins = {}
    for source in {ex.source for ex in examples}:
        for row in load_rows(source, "pairs"):
            if "margin" in row.data:
                value = row.data["margin"]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise HarnessError(f"{row.where}: field 'margin': expected a number, got {value!r}")
                margins[(row.source, row.line)] = float(value)
    if not margins:
        return None
    return torch.tensor([margins.get((ex.source, ex.line), 0.0) for ex in examples], dtype=torch.float64)


@dataclass
class PrepareContext:
    """What a batch kind's prepare hook needs to make an ``ExampleSet``, and what it reports back.

    ``policy`` is the stage's starting model (before any adapter), ``policy_key`` its identity;
    ``mixed_precision`` the autocast the stage trains under ("no", "bf16", "fp16"; the reference
    pass runs under it too); ``reference_passes`` and ``reward_passes`` count the passes run
    (not served by a cache).
    """

    stage: StageSpec
    policy: torch.nn.Module
    policy_key: str
    tokenizer: PreTrainedTokenizerBase
    cache_dir: Path
    force: bool
    mixed_precision: str = "no"
    reference_passes: int = 0
    reward_passes: int = 0
