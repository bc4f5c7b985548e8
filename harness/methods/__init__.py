"""Losses: pure functions of log-probabilities -> (per_example_loss, detached metrics).

One family per module: ``logprobs`` (gathering and reductions), ``sft``
(token losses of the SFT family and the optimizer-step normalization
contract), ``preference`` (pair losses), ``kto`` (unpaired labels), ``rm``
(reward models) and ``online`` (the rollout methods: KL estimators, PPO's
rewards, GAE, whitening and clipped losses, GRPO's advantages, token losses and
aggregations, the adaptive KL controller).  ``batches`` holds the typed
record each loss takes, and ``registry`` the methods.  A trainer never contains method math.

The names below are re-exported lazily (PEP 562): ``from harness.methods import dpo_loss`` imports
``harness.methods.preference`` (and torch) only then, so the registry and the spec load without torch.
"""

from __future__ import annotations

import importlib

# name -> the module of harness.methods that defines it
_WHERE = {
    "KtoLogps": "batches",
    "PairLogps": "batches",
    "PairRewards": "batches",
    "PpoTokens": "batches",
    "SftLogps": "batches",
    "kto_kl_estimate": "kto",
    "kto_loss": "kto",
    "mismatched_partners": "kto",
    "step_kl_pairs": "kto",
    "entropy_from_logits": "logprobs",
    "off_target_probs": "logprobs",
    "packed_entropy": "logprobs",
    "packed_token_logps": "logprobs",
    "reduce_logps": "logprobs",
    "sequence_logps": "logprobs",
    "target_mask": "logprobs",
    "token_counts": "logprobs",
    "token_entropies": "logprobs",
    "token_logps": "logprobs",
    "AdaptiveKLController": "online",
    "GRPO_AGGREGATIONS": "online",
    "KL_ESTIMATORS": "online",
    "explained_variance": "online",
    "gae": "online",
    "group_advantages": "online",
    "grpo_denominator": "online",
    "grpo_numerators": "online",
    "grpo_token_losses": "online",
    "kl_per_token": "online",
    "last_response_index": "online",
    "masked_mean": "online",
    "pair_preferences": "online",
    "ppo_policy_loss": "online",
    "ppo_token_losses": "online",
    "ppo_token_rewards": "online",
    "ppo_value_loss": "online",
    "whiten": "online",
    "zero_signal_fraction": "online",
    "dpo_loss": "preference",
    "hinge_loss": "preference",
    "ipo_loss": "preference",
    "log1mexp": "preference",
    "logratio_margin": "preference",
    "margin_of": "preference",
    "orpo_loss": "preference",
    "reward_metrics": "preference",
    "robust_loss": "preference",
    "simpo_loss": "preference",
    "with_sft_weight": "preference",
    "pool_rewards": "rm",
    "rm_loss": "rm",
    "brier_sft_loss": "sft",
    "dft_loss": "sft",
    "hellinger_sft_loss": "sft",
    "iw_sft_loss": "sft",
    "self_normalized_weights": "sft",
    "sft_loss": "sft",
    "sft_token_losses": "sft",
}

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
    "packed_entropy",
    "packed_token_logps",
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


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'harness.methods' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"harness.methods.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
