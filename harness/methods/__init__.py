"""Losses: pure functions of log-probabilities -> (per_example_loss, detached metrics).

One family per module: ``logprobs`` (gathering and reductions), ``sft``
(token losses of the SFT family and the optimizer-step normalization
contract), ``preference`` (pair losses), ``kto`` (unpaired labels) and ``rm``
(reward models).  ``batches`` holds the typed record each loss takes, and
``registry`` the methods.  A trainer never contains method math.
"""

from harness.methods.batches import KtoLogps, PairLogps, PairRewards, SftLogps
from harness.methods.kto import kto_kl_estimate, kto_loss, mismatched_partners, step_kl_pairs
from harness.methods.logprobs import (
    entropy_from_logits,
    off_target_probs,
    reduce_logps,
    sequence_logps,
    target_mask,
    token_counts,
    token_logps,
)
from harness.methods.preference import (
    dpo_loss,
    hinge_loss,
    ipo_loss,
    log1mexp,
    logratio_margin,
    margin_of,
    orpo_loss,
    reward_metrics,
    robust_loss,
    simpo_loss,
    with_sft_weight,
)
from harness.methods.rm import pool_rewards, rm_loss
from harness.methods.sft import (
    brier_sft_loss,
    dft_loss,
    hellinger_sft_loss,
    iw_sft_loss,
    self_normalized_weights,
    sft_loss,
    sft_token_losses,
)

__all__ = [
    "KtoLogps",
    "PairLogps",
    "PairRewards",
    "SftLogps",
    "brier_sft_loss",
    "dft_loss",
    "dpo_loss",
    "entropy_from_logits",
    "hellinger_sft_loss",
    "hinge_loss",
    "ipo_loss",
    "iw_sft_loss",
    "kto_kl_estimate",
    "kto_loss",
    "log1mexp",
    "logratio_margin",
    "margin_of",
    "mismatched_partners",
    "off_target_probs",
    "orpo_loss",
    "pool_rewards",
    "reduce_logps",
    "reward_metrics",
    "rm_loss",
    "robust_loss",
    "self_normalized_weights",
    "sequence_logps",
    "sft_loss",
    "sft_token_losses",
    "simpo_loss",
    "step_kl_pairs",
    "target_mask",
    "token_counts",
    "token_logps",
    "with_sft_weight",
]
