"""KTO: a loss on unpaired desirable / undesirable completions (Ethayarajh et al. 2024).

Every function is pure.  The KL reference point z0 is a batch estimate of
KL(pi || pi_ref) from *mismatched* prompt/completion pairs of the optimizer
step's whole batch (all micro-batches), clamped at 0 and detached; the loop
computes it once per step (``harness.train.forward.kto_step_inputs``) and passes it to ``kto_loss``
in the ``KtoLogps`` record.
"""

from __future__ import annotations

import torch

from harness.methods.batches import KtoLogps

Metrics = dict[str, torch.Tensor]


def mismatched_partners(n: int) -> list[int]:
    """Which completion each of a step's n examples is paired with for the KL estimate.

    Example k's prompt gets example (k + 1) mod n's completion, a rotation by
    one as in TRL's KTO.  A step of one example has no mismatched pair: [].
    """
    return [(k + 1) % n for k in range(n)] if n >= 2 else []


def step_kl_pairs(step: list[int]) -> list[tuple[int, int]]:
    """(prompt example, completion example) index pairs of one step's KL estimate."""
    return [(step[k], step[j]) for k, j in enumerate(mismatched_partners(len(step)))]


def kto_kl_estimate(policy_kl: torch.Tensor, ref_kl: torch.Tensor, history: list[float]) -> float:
    """z0 = max(0, mean_k (log pi(y'_k | x_k) - log pi_ref(y'_k | x_k))) over mismatched pairs.

    Args:
        policy_kl, ref_kl: [M] sequence log-probs of the step's M mismatched pairs.
        history: earlier steps' estimates.  With M = 0 (a step batch of one) the
            estimate is their mean, 0 at the start.
    Returns: a float (detached by construction).  Ethayarajh et al. 2024, Sec. 4.1 (z0).
    """
    if policy_kl.numel() == 0:
        return sum(history) / len(history) if history else 0.0
    return max(0.0, float((policy_kl.detach() - ref_kl.detach()).double().mean()))


def _subset_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values where mask holds, 0 if the mask is empty (detached)."""
    mask = mask.to(values.dtype)
    return ((values * mask).sum() / mask.sum().clamp(min=1)).detach()


def kto_loss(
    batch: KtoLogps,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, Metrics]:
    """Per-example KTO loss.

    Args:
        batch.policy, batch.ref: [B] sequence log-probs of each example's own completion.
        batch.desirable: [B] bool, the example's label.
        batch.kl: the step's z0 from ``kto_kl_estimate`` (a constant).
        beta > 0; desirable_weight, undesirable_weight >= 0 (w_d, w_u).
    Returns:
        per_example [B]: w_d (1 - sigma(beta (r - z0))) if desirable, else
        w_u (1 - sigma(beta (z0 - r))), with r = log pi - log pi_ref
        (Ethayarajh et al. 2024, Eq. 8); metrics: ``rewards/chosen`` and
        ``rewards/rejected`` (mean beta * r over this batch's desirable /
        undesirable examples, 0 when there are none), ``logps/chosen``,
        ``logps/rejected`` likewise, and ``kl`` = z0.
    """
    if not beta > 0:
        raise ValueError(f"method.beta must be > 0, got {beta!r}")
    policy_logps, kl, desirable = batch.policy, batch.kl, batch.desirable.bool()
    logratio = policy_logps - batch.ref
    good = desirable_weight * (1 - torch.sigmoid(beta * (logratio - kl)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratio)))
    per_example = torch.where(desirable, good, bad)
    rewards = beta * logratio.detach()
    metrics = {
        "rewards/chosen": _subset_mean(rewards, desirable),
        "rewards/rejected": _subset_mean(rewards, ~desirable),
        "logps/chosen": _subset_mean(policy_logps.detach(), desirable),
        "logps/rejected": _subset_mean(policy_logps.detach(), ~desirable),
        "kl": torch.tensor(float(kl), dtype=torch.float64),
    }
    return per_example, metrics
