"""Preference losses on pairs of sequence log-probs (TRL's definitions).

Every loss here is a pure function of four [B] tensors, the policy's and the
reference's sequence log-probs of the chosen and rejected responses (reduced
with ``sequence_logps`` by the caller, sum or mean per ``method.logprob_reduction``),
and returns ``(per_example [B], metrics)``.  per_example is averaged over the
optimizer step's examples by the loop (``harness.batches.step_denominator``).

Notation (DESIGN.md, "Method definitions"):
    h = (log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r)),   z = beta * h.

A new pair loss is one small function: compute h with ``logratio_margin``, its
loss from h, and its metrics with ``reward_metrics``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Metrics = dict[str, torch.Tensor]


def logratio_margin(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
) -> torch.Tensor:
    """h = (pc - rc) - (pr - rr): [B] x 4 -> [B], the pair's log-ratio margin."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def reward_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
) -> Metrics:
    """Batch means of the pair metrics, detached (logged as ``train/rewards/*``, ``train/logps/*``).

    Args: four [B] tensors; rewards are the method's implicit rewards (for DPO
    beta * (log pi - log pi_ref)), logps the policy's sequence log-probs.
    """
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margin": (chosen_rewards - rejected_rewards).mean(),
        # Ties count as wrong, as in TRL.
        "rewards/accuracy": (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype).mean(),
        "logps/chosen": policy_chosen.detach().mean(),
        "logps/rejected": policy_rejected.detach().mean(),
    }


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"method.beta must be > 0, got {beta!r}")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """DPO, or conservative DPO when label_smoothing > 0.

    Args:
        policy_chosen, policy_rejected, ref_chosen, ref_rejected: [B] sequence log-probs.
        beta: inverse temperature of the implicit reward, > 0.
        label_smoothing: eps in [0, 0.5], the assumed probability that a label is flipped.
    Returns:
        per_example [B] = -(1 - eps) log sigma(z) - eps log sigma(-z), z = beta * h,
        and ``reward_metrics`` with rewards beta * (log pi - log pi_ref).
    Gradient (eps = 0): d loss / d policy_chosen = beta * (sigma(z) - 1).
    """
    _check_beta(beta)
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"method.label_smoothing must be in [0, 0.5], got {label_smoothing!r}")
    z = beta * logratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    # DPO: Rafailov et al. 2023, Eq. 7.  Conservative DPO (labels flipped with
    # probability eps): Mitchell 2023, "A note on DPO with noisy preferences", Eq. 3.
    per_example = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    metrics = reward_metrics(
        beta * (policy_chosen - ref_chosen),
        beta * (policy_rejected - ref_rejected),
        policy_chosen,
        policy_rejected,
    )
    return per_example, metrics


def with_sft_weight(per_example: torch.Tensor, nll_chosen: torch.Tensor, weight: float) -> torch.Tensor:
    """Add ``method.sft_weight`` * NLL(chosen) to any preference loss: [B], [B] -> [B].

    ``nll_chosen`` is the per-example NLL of the chosen response, conventionally
    its mean token NLL, -sequence_logps(token_logps, mask, "mean") (TRL's rpo_alpha).
    A weight of 0 returns ``per_example`` unchanged (no graph through nll_chosen).
    """
    if weight == 0:
        return per_example
    return per_example + weight * nll_chosen
