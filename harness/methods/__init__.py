"""Losses: pure functions of log-probabilities -> (per_example_loss, detached metrics).

One family per module: ``logprobs`` (gathering and reductions), ``sft``
(token losses of the SFT family and the optimizer-step normalization
contract), ``preference`` (pair losses), ``kto`` (unpaired labels), ``rm``
(reward models) and ``online`` (the rollout methods: KL estimators, PPO's
rewards, GAE, whitening and clipped losses, GRPO's advantages, token losses and
aggregations, the adaptive KL controller).  ``batches`` holds the typed
record each loss takes, and ``registry`` the methods.  A trainer never contains method math.
"""

from harness.methods.batches import KtoLogps, PairLogps, PairRewards, PpoTokens, SftLogps
from harness.methods.kto import kto_kl_estimate, kto_loss, mismatched_partners, step_kl_pairs
from harness.methods.logprobs import (
    entropy_from_logits,
    off_target_probs,
    reduce_logps,
    sequence_logps,
    target_mask,
    token_counts,
    token_entropies,
    token_logps,
)
from harness.methods.online import (
    GRPO_AGGREGATIONS,
    KL_ESTIMATORS,
    AdaptiveKLController,
    explained_variance,
    gae,
    group_advantages,
    grpo_denominator,
    grpo_numerators,
    grpo_token_losses,
    kl_per_token,
    last_response_index,
    masked_mean,
    pair_preferences,
    ppo_policy_loss,
    ppo_token_losses,
    ppo_token_rewards,
    ppo_value_loss,
    whiten,
    zero_signal_fraction,
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
    "GRPO_AGGREGATIONS",
    "KL_ESTIMATORS",
    "AdaptiveKLController",
    "KtoLogps",
    "PairLogps",
    "PairRewards",
    "PpoTokens",
    "SftLogps",
    "brier_sft_loss",
    "dft_loss",
    "dpo_loss",
    "entropy_from_logits",
    "explained_variance",
    "gae",
    "group_advantages",
    "grpo_denominator",
    "grpo_numerators",
    "grpo_token_losses",
    "hellinger_sft_loss",
    "hinge_loss",
    "ipo_loss",
    "iw_sft_loss",
    "kl_per_token",
    "kto_kl_estimate",
    "kto_loss",
    "last_response_index",
    "log1mexp",
    "logratio_margin",
    "margin_of",
    "masked_mean",
    "mismatched_partners",
    "off_target_probs",
    "orpo_loss",
    "pair_preferences",
    "pool_rewards",
    "ppo_policy_loss",
    "ppo_token_losses",
    "ppo_token_rewards",
    "ppo_value_loss",
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
    "token_entropies",
    "token_logps",
    "whiten",
    "with_sft_weight",
    "zero_signal_fraction",
]
