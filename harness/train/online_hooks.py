"""How the online loop runs each online batch kind: ``ONLINE_HOOKS[kind]``, an ``OnlineHooks`` record.

The loop (``harness.train.online``) never asks which method it trains: it reads these hooks, and
each hook is a thin call into the pure functions of ``harness.methods.online``.  The records the
hooks read and return are here too: ``RolloutTokens`` (what advantages are built from),
``Advantages`` and ``Minibatch`` (what a method's loss sees of one micro-batch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from harness.methods import (
    AdaptiveKLController,
    PairLogps,
    PpoTokens,
    gae,
    group_advantages,
    grpo_denominator,
    grpo_numerators,
    kl_per_token,
    masked_mean,
    pair_preferences,
    ppo_token_rewards,
    reduce_logps,
    token_entropies,
    whiten,
    with_sft_weight,
    zero_signal_fraction,
)
from harness.methods.registry import GROUPS, PPO, SAMPLED_PAIRS, SPIN_PAIRS, BatchKind, MethodEntry


@dataclass
class RolloutTokens:
    """One rollout as a method's advantages read it: N samples, per-token tensors [N, T] (float64) padded
    to the longest completion, 0 past each completion."""

    scores: torch.Tensor  # [N] the reward source's scores after the method's shaping (``OnlineHooks.scores``)
    mask: torch.Tensor  # [N, T] 1 on each completion token
    logps: torch.Tensor | None  # the rollout ("old") log-probs, when ``OnlineHooks.rollout_logps``
    ref_logps: torch.Tensor | None  # when ``OnlineHooks.uses_reference``
    values: torch.Tensor | None  # the value model's, when ``OnlineHooks.value_model``


@dataclass
class Advantages:
    advantages: torch.Tensor  # [N] one per sample, or [N, T] per token
    returns: torch.Tensor | None  # [N, T] the value model's targets, when the method has one
    metrics: dict


@dataclass
class Minibatch:
    """What a method's loss sees of one micro-batch, rows in the micro-batch's order; per-token tensors [B, L]."""

    logps: torch.Tensor  # the policy's completion log-probs now (with gradient)
    old_logps: torch.Tensor  # at sampling time (detached)
    ref_logps: torch.Tensor | None  # under the reference, when the method uses one
    advantages: torch.Tensor  # [B] per sample or [B, L] per token
    mask: torch.Tensor  # completion tokens that count
    values: torch.Tensor | None = None  # the value model now (with gradient)
    old_values: torch.Tensor | None = None  # the value model at rollout time
    returns: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # [B, L + 1, V] from column P - 1 (``completion_logps``), when asked


def _keep_untruncated(scores: torch.Tensor, truncated: torch.Tensor, params: dict) -> torch.Tensor:
    """1 per sample, or 0 for a truncated one under ``method.mask_truncated``."""
    return 1.0 - truncated if params.get("mask_truncated") else torch.ones_like(truncated)


@dataclass(frozen=True)
class OnlineHooks:
    """How the online loop runs one batch kind; every function is a thin call into ``harness.methods``."""

    samples_per_prompt: Callable[[dict], int]
    passes: Callable[[dict], int]  # updates per rollout
    uses_reference: Callable[[dict], bool]
    rollout_logps: Callable[[dict], bool]  # the advantages read the rollout log-probs
    value_model: Callable[[dict], str | None]  # method.value_model, or None for a method without one
    needs_logits: Callable[[dict], bool]  # the loss reads the logits (an entropy bonus)
    new_state: Callable[[dict], Any]  # the method's state across rollouts (PPO's KL controller), or None
    scores: Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]  # raw [N], truncated [N] -> scores [N]
    advantages: Callable[[RolloutTokens, dict, Any], Advantages]
    numerators: Callable[[MethodEntry, Minibatch, dict], tuple]  # -> per-sample numerators [B], metrics
    denominator: Callable[[list[torch.Tensor], dict], float]  # the step's micro-batch masks -> denominator
    kl_estimator: str  # the estimator of train/kl (KL_ESTIMATORS), as the kind's ``kl_estimator`` tag says
    # scores [N], truncated [N] -> 1 for each sample the loss counts, 0 for one it leaves out
    keep: Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor] = _keep_untruncated
    unit: int = 1  # consecutive samples that stay in one minibatch and micro-batch (a pair: 2)
    with_data_responses: bool = False  # each sample is followed by its prompt's data response (SPIN)


# ---- GRPO


def _grpo_advantages(r: RolloutTokens, p: dict, state) -> Advantages:
    advantages = group_advantages(r.scores, p["group_size"], p["advantage_norm"])
    return Advantages(advantages, None, {"zero_signal_groups": zero_signal_fraction(r.scores, p["group_size"])})


def _grpo_numerators(method: MethodEntry, mb: Minibatch, params: dict):
    token_losses, metrics = method.loss(mb.logps, mb.old_logps, mb.ref_logps, mb.advantages, mb.mask,
                                        **method.loss_kwargs(params))
    return grpo_numerators(token_losses, mb.mask, params["loss_aggregation"]), metrics


GRPO_HOOKS = OnlineHooks(
    samples_per_prompt=lambda p: p["group_size"],
    passes=lambda p: p["num_iterations"],
    uses_reference=lambda p: p["beta"] > 0,
    rollout_logps=lambda p: False,
    value_model=lambda p: None,
    needs_logits=lambda p: False,
    new_state=lambda p: None,
    scores=lambda raw, truncated, p: raw,
    advantages=_grpo_advantages,
    numerators=_grpo_numerators,
    denominator=lambda masks, p: grpo_denominator(masks, p["loss_aggregation"], p["max_new_tokens"]),
    kl_estimator="k3",
)


# ---- PPO


def _ppo_scores(raw: torch.Tensor, truncated: torch.Tensor, p: dict) -> torch.Tensor:
    """TRL's missing_eos_penalty (subtracted from a completion without EOS), then clipping to ±reward_clip."""
    scores = raw
    if p["missing_eos_penalty"] is not None:
        scores = scores - p["missing_eos_penalty"] * truncated.to(scores.dtype)
    if p["reward_clip"] is not None:
        scores = scores.clamp(-p["reward_clip"], p["reward_clip"])
    return scores


def _ppo_advantages(r: RolloutTokens, p: dict, kl_ctl: AdaptiveKLController) -> Advantages:
    """KL-shaped per-token rewards (k1, beta as it is now), GAE, whitened advantages; then beta adapts
    to the rollout's KL per sequence (summed over its tokens, as Ziegler et al. 2019's controller reads it)."""
    beta = kl_ctl.value
    kl = torch.zeros_like(r.mask) if r.ref_logps is None else kl_per_token(r.logps, r.ref_logps, "k1") * r.mask
    rewards = ppo_token_rewards(r.scores, kl, r.mask, beta)
    if p["whiten_rewards"]:
        rewards = whiten(rewards, r.mask, shift_mean=False)
    advantages, returns = gae(rewards, r.values, r.mask, p["gamma"], p["lam"])
    advantages = whiten(advantages, r.mask)
    kl_per_sequence = float(kl.sum(-1).mean())
    kl_ctl.update(kl_per_sequence, len(r.scores))
    return Advantages(advantages, returns, {"beta": beta, "kl_per_sequence": kl_per_sequence,
                                            "non_score_reward": float((-beta * kl).sum(-1).mean()),
                                            "returns/mean": float(masked_mean(returns, r.mask))})


def _ppo_numerators(method: MethodEntry, mb: Minibatch, params: dict):
    entropies = token_entropies(mb.logits[:, :-1]) if mb.logits is not None else None
    batch = PpoTokens(mb.logps, mb.old_logps, mb.advantages, mb.values, mb.old_values, mb.returns, mb.mask,
                      entropies)
    token_losses, metrics = method.loss(batch, **method.loss_kwargs(params))
    return grpo_numerators(token_losses, mb.mask, "dapo"), metrics  # token sums; / the step's token count


PPO_HOOKS = OnlineHooks(
    samples_per_prompt=lambda p: 1,
    passes=lambda p: p["ppo_epochs"],
    uses_reference=lambda p: p["beta"] > 0,
    rollout_logps=lambda p: True,  # the KL-shaped rewards are of the sampling policy's log-probs
    value_model=lambda p: p["value_model"],
    needs_logits=lambda p: p["ent_coef"] > 0,
    new_state=lambda p: AdaptiveKLController(p["beta"], p["kl_target"], p["kl_horizon"]),
    scores=_ppo_scores,
    advantages=_ppo_advantages,
    numerators=_ppo_numerators,
    denominator=lambda masks, p: grpo_denominator(masks, "dapo", None),
    kl_estimator="k1",
)



# ---- online DPO and SPIN: pairs of samples


def _pair_advantages(r: RolloutTokens, p: dict, state) -> Advantages:
    """+1 / -1 for the preferred / other sample of each consecutive pair, 0 for both when tied."""
    preferences = pair_preferences(r.scores)
    tied = preferences.view(-1, 2)[:, 0] == 0
    return Advantages(preferences, None, {"tied_pairs": float(tied.sum()), "tie_fraction": float(tied.double().mean())})


def _pair_keep(scores: torch.Tensor, truncated: torch.Tensor, p: dict) -> torch.Tensor:
    """A tied pair teaches nothing: both its samples are left out of the loss (and of the denominator)."""
    return (pair_preferences(scores) != 0).to(truncated.dtype)


def _pair_numerators(method: MethodEntry, mb: Minibatch, params: dict):
    """The preference loss of each consecutive pair of samples, chosen by the sign of its advantages;
    a tied pair (its rows masked out) contributes 0 and no metrics."""
    counts = mb.mask.sum(-1)
    reduction = method.reduction(params)
    sums = (mb.logps * mb.mask).sum(-1)
    policy = reduce_logps(sums, counts, reduction).view(-1, 2)
    ref = reduce_logps((mb.ref_logps * mb.mask).sum(-1), counts, reduction).view(-1, 2)
    nll = (-sums / counts.clamp(min=1)).view(-1, 2)  # mean token NLL, for method.sft_weight
    sign = mb.advantages.view(-1, 2)[:, 0]
    rows = torch.arange(len(sign), device=sign.device)
    c = (sign < 0).long()  # the chosen's column: 0 when the first sample is preferred
    r = 1 - c

    def pairs(keep):
        return PairLogps(policy[rows, c][keep], policy[rows, r][keep], ref[rows, c][keep], ref[rows, r][keep],
                         nll[rows, c][keep])

    numerators, metrics = method.loss(pairs(torch.ones_like(sign, dtype=torch.bool)), **method.loss_kwargs(params))
    numerators = with_sft_weight(numerators, nll[rows, c], params.get("sft_weight", 0.0))
    live = sign != 0
    if bool(live.any()) and not bool(live.all()):
        _, metrics = method.loss(pairs(live), **method.loss_kwargs(params))
    return numerators * live.to(numerators.dtype), metrics


def _pair_denominator(masks: list[torch.Tensor], params: dict) -> float:
    """The step's untied pairs (a tied pair's rows are masked out)."""
    rows = sum(int((m.sum(-1) > 0).sum()) for m in masks)
    return float(max(rows // 2, 1))


PAIR_HOOKS = OnlineHooks(
    samples_per_prompt=lambda p: 2,
    passes=lambda p: 1,
    uses_reference=lambda p: True,
    rollout_logps=lambda p: False,
    value_model=lambda p: None,
    needs_logits=lambda p: False,
    new_state=lambda p: None,
    scores=lambda raw, truncated, p: raw,
    advantages=_pair_advantages,
    numerators=_pair_numerators,
    denominator=_pair_denominator,
    kl_estimator="k1",
    keep=_pair_keep,
    unit=2,
)
# SPIN samples one completion per prompt; the prompt's data response is its pair (the data's is chosen).
SPIN_HOOKS = dataclasses.replace(PAIR_HOOKS, samples_per_prompt=lambda p: 1, with_data_responses=True)

ONLINE_HOOKS: dict[BatchKind, OnlineHooks] = {GROUPS: GRPO_HOOKS, PPO: PPO_HOOKS, SAMPLED_PAIRS: PAIR_HOOKS,
                                              SPIN_PAIRS: SPIN_HOOKS}
