"""Reward-model loss: a Bradley-Terry pairwise loss on scalar rewards (TRL's RewardTrainer).

Pure functions: ``pool_rewards`` turns per-token head outputs into one reward
per sequence, ``rm_loss`` scores chosen against rejected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.methods.batches import PairRewards

POOLINGS = ("last", "mean")


def pool_rewards(values: torch.Tensor, response_mask: torch.Tensor, pooling: str = "last") -> torch.Tensor:
    """One reward per sequence from the scalar head's per-token values: [B, T], [B, T] -> [B].

    ``response_mask`` marks the response tokens themselves (the collator's
    ``loss_mask``, not shifted).  ``last``: the value at the last response
    token (the last non-pad token under right padding, as
    AutoModelForSequenceClassification pools); ``mean``: the mean over response tokens.
    """
    mask = response_mask.to(values.dtype)
    if pooling == "mean":
        return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    if pooling != "last":
        raise ValueError(f"method.pooling must be one of {POOLINGS}, got {pooling!r}")
    positions = torch.arange(values.shape[1], device=values.device)
    last = (positions * response_mask.long()).argmax(-1)  # index of the last 1 in each row
    return values.gather(1, last.unsqueeze(1)).squeeze(1)


def rm_loss(
    batch: PairRewards, *, center_rewards_coefficient: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example reward-model loss.

    Args:
        batch.chosen, batch.rejected: [B] scalar rewards r_c, r_r.
        batch.margin: [B] required margin m (the data's ``margin`` field), or None for 0.
        center_rewards_coefficient: c >= 0.
    Returns:
        per_example [B] = -log sigma(r_c - r_r - m) + c * (r_c + r_r)^2 (Ouyang et al. 2022,
        Eq. 1; the margin as in Llama 2, Touvron et al. 2023, Eq. 2; the centering term as
        TRL's center_rewards_coefficient, Eisenstein et al. 2023); metrics (detached):
        ``rewards/accuracy`` (share with r_c > r_r), ``rewards/margin`` (mean r_c - r_r),
        ``rewards/chosen``, ``rewards/rejected``, ``rewards/mean`` and ``rewards/std`` (over all 2B rewards).
    """
    chosen, rejected, margin = batch.chosen, batch.rejected, batch.margin
    diff = chosen - rejected
    per_example = -F.logsigmoid(diff - margin if margin is not None else diff)
    if center_rewards_coefficient:
        per_example = per_example + center_rewards_coefficient * (chosen + rejected) ** 2
    both = torch.cat([chosen, rejected]).detach()
    metrics = {
        "rewards/accuracy": (diff > 0).to(chosen.dtype).mean().detach(),
        "rewards/margin": diff.mean().detach(),
        "rewards/chosen": chosen.mean().detach(),
        "rewards/rejected": rejected.mean().detach(),
        "rewards/mean": both.mean(),
        "rewards/std": both.std(unbiased=False),
    }
    return per_example, metrics
