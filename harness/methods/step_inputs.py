"""Batch-relative inputs of one optimizer step: the KTO KL estimate and IW-SFT weights.

DESIGN.md, "Optimizer-step normalization": quantities relative to the batch
use the step's *whole* batch (every micro-batch), so ``batch_size b,
grad_accum k`` and ``batch_size k*b, grad_accum 1`` give the same update.  The
loop calls ``step_inputs`` once per step, before any micro-batch, and hands
each micro-batch its slice (``StepInputs.for_share``).

KTO rows (``EncodedKTO``: ``prompt_ids``, ``completion_ids``, ``label``) pair
prompt k with completion ``mismatched_partners(n)[k]`` of the step for the KL
estimate.  The step plan is known before training, so the reference log-probs
of exactly those mismatched pairs are computed once, up front
(``kto_reference``), and cached with the plan that decides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.data.collate import right_pad
from harness.methods import (
    kto_kl_estimate,
    mismatched_partners,
    reduce_logps,
    self_normalized_weights,
    sequence_logps,
    target_mask,
    token_logps,
)


def kto_sequence_logps(model, prompts: list[list[int]], completions: list[list[int]], pad_id: int,
                       device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed completion log-probs of ``prompt + completion`` rows.

    Returns (sums [B], counts [B], logits [B, T, V], target mask [B, T - 1]).
    """
    rows = [p + c for p, c in zip(prompts, completions)]
    masks = [[0] * len(p) + [1] * len(c) for p, c in zip(prompts, completions)]
    ids = right_pad(rows, pad_id).to(device)
    attention = right_pad([[1] * len(r) for r in rows], 0).to(device)
    logits = model(input_ids=ids, attention_mask=attention).logits
    mask = target_mask(right_pad(masks, 0).to(device))
    return sequence_logps(token_logps(logits, ids), mask, "sum"), mask.sum(-1), logits, mask


def step_kl_pairs(step: list[int]) -> list[tuple[int, int]]:
    """(prompt example, completion example) index pairs of one step's KL estimate."""
    return [(step[k], step[j]) for k, j in enumerate(mismatched_partners(len(step)))]


@torch.no_grad()
def kl_pair_logps(model, examples: list, pairs: list[tuple[int, int]], pad_id: int, device,
                  batch_size: int = 16) -> torch.Tensor:
    """[M, 2] (summed log-prob, token count) of prompt i followed by completion j, per (i, j) in ``pairs``."""
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        sums, counts, *_ = kto_sequence_logps(model, [examples[i].prompt_ids for i, _ in chunk],
                                             [examples[j].completion_ids for _, j in chunk], pad_id, device)
        out.append(torch.stack([sums.double(), counts.double()], dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 2, dtype=torch.float64)


@dataclass
class StepState:
    """What persists across steps: the KTO estimates so far (for steps with one example)."""

    kl_history: list[float] = field(default_factory=list)


@dataclass
class StepInputs:
    kl: float | None = None
    weights: dict[int, float] | None = None  # example index -> self-normalized IW-SFT weight
    per_example: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [N], e.g. the RM "margin"

    def for_share(self, share: list[int]) -> dict:
        """Keyword inputs of the loss for the micro-batch of examples ``share``."""
        out = {name: values[share] for name, values in self.per_example.items()}
        if self.kl is not None:
            out["kl"] = self.kl
        if self.weights is not None:
            out["weights"] = torch.tensor([self.weights[i] for i in share], dtype=torch.float64)
        return out


def step_inputs(model, method, params: dict, examples: list, step: list[int], pad_id: int, device,
                state: StepState, kl_ref: dict | None = None,
                log_weights: torch.Tensor | None = None,
                per_example: dict[str, torch.Tensor] | None = None) -> StepInputs:
    """The step's batch-relative inputs, from the policy before this step's update.

    ``kl_ref`` maps each (prompt i, completion j) mismatched pair of the plan to
    its reference (sum, count); ``log_weights`` [N] are the IW-SFT log-weights of all examples;
    ``per_example`` holds other per-example loss inputs ([N] each, e.g. the RM margin), passed through.
    """
    passed = per_example or {}
    if method.batch_kind == "kto":
        pairs = step_kl_pairs(step)
        policy = kl_pair_logps(model, examples, pairs, pad_id, device)
        ref = torch.tensor([kl_ref[p] for p in pairs], dtype=torch.float64).reshape(-1, 2)
        reduction = params["logprob_reduction"] or method.default_reduction
        kl = kto_kl_estimate(reduce_logps(policy[:, 0], policy[:, 1], reduction),
                             reduce_logps(ref[:, 0], ref[:, 1], reduction), state.kl_history)
        state.kl_history.append(kl)
        return StepInputs(kl=kl, per_example=passed)
    if log_weights is not None:
        normalized = self_normalized_weights(log_weights[step])
        return StepInputs(weights=dict(zip(step, normalized.tolist())), per_example=passed)
    return StepInputs(per_example=passed)
