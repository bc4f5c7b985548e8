"""Losses: pure functions of log-probabilities -> (per_example_loss, detached metrics).

One family per module: ``logprobs`` (gathering and reductions), ``sft``
(token NLL and the optimizer-step normalization contract), ``preference``
(pair losses).  A trainer never contains method math.
"""

from harness.losses.logprobs import (
    entropy_from_logits,
    reduce_logps,
    sequence_logps,
    target_mask,
    token_counts,
    token_logps,
)
from harness.losses.preference import dpo_loss, logratio_margin, reward_metrics, with_sft_weight
from harness.losses.sft import sft_loss, sft_token_losses

__all__ = [
    "dpo_loss",
    "entropy_from_logits",
    "logratio_margin",
    "reduce_logps",
    "reward_metrics",
    "sequence_logps",
    "sft_loss",
    "sft_token_losses",
    "target_mask",
    "token_counts",
    "token_logps",
    "with_sft_weight",
]
