"""Typed loss inputs: the record each batch kind's loss takes, instead of positional tensors.

A loss is ``loss(batch, *, params) -> (per_example [B], metrics)``.  The
forward pass of a batch kind (``harness.train.forward``) fills the record; a
method that needs a new input adds a field here, not a parameter threaded
through the loop.  Shapes: B examples, T sequence length, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SftLogps:
    """One SFT micro-batch.

    token_logps: [B, T - 1] log p_y; mask: [B, T - 1] target mask;
    logits: [B, T, V] the next-token distribution (Brier needs all of it), or None;
    weights: [B] IW-SFT weights self-normalized over the step, or None;
    input_ids: [B, T] the tokens (column t's target is ``input_ids[:, t + 1]``; Brier needs them), or None.
    """

    token_logps: torch.Tensor
    mask: torch.Tensor
    logits: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None


@dataclass(frozen=True)
class PairLogps:
    """Sequence log-probs of a pair micro-batch, reduced (sum or mean) by the caller.

    chosen, rejected: [B] policy log pi(c), log pi(r); ref_chosen, ref_rejected: [B]
    reference log-probs, None for reference-free methods; nll_chosen: [B] the chosen
    response's mean token NLL; nll_chosen_with_prompt: [B] the same over every token
    but the first (ORPO's original span), None when not computed.
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None
    nll_chosen: torch.Tensor | None = None
    nll_chosen_with_prompt: torch.Tensor | None = None


@dataclass(frozen=True)
class KtoLogps:
    """Unpaired KTO examples: policy, ref [B] sequence log-probs of each own completion,
    desirable [B] bool labels, kl the step's z0 estimate (a constant)."""

    policy: torch.Tensor
    ref: torch.Tensor
    desirable: torch.Tensor
    kl: float


@dataclass(frozen=True)
class PairRewards:
    """Reward-model scores of a pair micro-batch: chosen, rejected [B] rewards r_c, r_r;
    margin [B] the required margin (the data's ``margin`` field), or None for 0."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    margin: torch.Tensor | None = None


@dataclass(frozen=True)
class PpoTokens:
    """One PPO micro-batch, per response token: every tensor [B, T], aligned with ``mask``.

    logps: log pi now (with gradient); old_logps: log pi_old stored at rollout time; advantages:
    whitened GAE advantages; values: V now (with gradient); old_values: V at rollout time; returns:
    GAE returns (advantages + old values, before whitening); entropies: H of the policy's next-token
    distribution (with gradient) when the loss has an entropy bonus, else None.
    """

    logps: torch.Tensor
    old_logps: torch.Tensor
    advantages: torch.Tensor
    values: torch.Tensor
    old_values: torch.Tensor
    returns: torch.Tensor
    mask: torch.Tensor
    entropies: torch.Tensor | None = None
