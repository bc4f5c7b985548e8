"""Online (rollout) losses: KL estimators, PPO and GRPO, as pure functions of per-token tensors.

Shapes: B sampled completions, T columns.  ``mask`` [B, T] is 1 on response
(completion) tokens and 0 elsewhere (prompt, padding, left or right); response
tokens need not start at column 0.  Every log-prob tensor [B, T] holds the
per-token log-prob of the *sampled* token, aligned with the mask.  Outside the
mask every returned per-token tensor is 0.

The normalization contract is the offline loop's (``harness.methods.sft``):
a step spans several minibatches, so a loss returns per-example *numerators*
and the loop divides their sum by one denominator for the whole optimizer step:

    denom = grpo_denominator([mask of every minibatch of the step], aggregation, max_completion_length)
    for each minibatch:
        token_losses, metrics = grpo_token_losses(...)
        (grpo_numerators(token_losses, mask, aggregation).sum() / denom).backward()

PPO's token losses use the same pair (``"dapo"``: the step's token mean).

How TRL 1.16's GRPOTrainer aggregates (``_compute_loss``), which this module
matches exactly on one batch (one minibatch, one process; tests/train/test_trl_parity.py):
    grpo     mean over sequences of each sequence's token mean, per micro-batch, / grad-accum steps;
    bnpo     token sum / the *micro-batch's* token count, / grad-accum steps;
    dr_grpo  token sum / (micro-batch sequences * max_completion_length), / grad-accum steps;
    dapo     token sum / (the generation batch's token count over all processes
             * grad-accum steps / steps_per_generation / processes).
Under gradient accumulation or several processes TRL therefore averages
per-micro-batch means: ``bnpo`` weights each micro-batch equally whatever its
token count, and ``grpo`` and ``dr_grpo`` do so whatever its sequence count
(the same thing when every micro-batch has the same size, as TRL's always do).
TRL's ``dapo`` divides by the generation batch's token count spread evenly over
its optimizer steps, which is the step's own count only when
steps_per_generation equals the grad-accum steps (TRL's default).  Harness
divides by the optimizer step's own total, so ``batch_size: b, grad_accum: k``
equals ``batch_size: k*b, grad_accum: 1`` for every aggregation; ``bnpo`` and
``dapo`` are therefore the same loss here.

GRPO's KL term follows TRL 1.16's default, not Shao et al.'s plain beta * k3:
it is weighted by the ratio pi / pi_old (``grpo_token_losses``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.methods.batches import PpoTokens

Metrics = dict[str, torch.Tensor]

# Schulman 2020, "Approximating KL divergence" (http://joschu.net/blog/kl-approx.html), per sampled token.
KL_ESTIMATORS = {
    "k1": "k1 = log pi - log pi_ref per sampled response token: unbiased for KL(pi || pi_ref), high variance",
    "k2": "k2 = (log pi - log pi_ref)^2 / 2 per sampled response token: biased, low variance "
          "(its expectation under pi is the second-order approximation of KL(pi || pi_ref))",
    "k3": "k3 = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1 per sampled response token: "
          "unbiased for KL(pi || pi_ref) and never negative",
}
GRPO_AGGREGATIONS = ("grpo", "bnpo", "dr_grpo", "dapo")
ADVANTAGE_NORMS = ("group", "batch", "none")
GROUP_STD_EPS = 1e-4  # TRL 1.16 GRPOTrainer: A = (r - mean) / (std + 1e-4)
WHITEN_EPS = 1e-8


def _fmask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.to(like.dtype)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x [B, T] over the mask's tokens (0 if the mask is empty)."""
    m = _fmask(mask, x)
    return (x * m).sum() / m.sum().clamp(min=1)


def kl_per_token(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL estimate [B, T] from log pi and log pi_ref [B, T] of the sampled tokens.

    Not masked: multiply by the response mask.  Formulas in ``KL_ESTIMATORS`` (Schulman 2020).
    """
    log_ratio = logps - ref_logps
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.exp(-log_ratio) + log_ratio - 1
    raise ValueError(f"method.kl_estimator must be one of {tuple(KL_ESTIMATORS)}, got {estimator!r}")


def last_response_index(mask: torch.Tensor) -> torch.Tensor:
    """Column of each row's last response token [B] (long); a row without one is an error."""
    has = mask.bool()
    empty = (~has.any(-1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"empty response: rows {empty} have no response token (mask all 0)")
    columns = torch.arange(mask.shape[1], device=mask.device).expand_as(has)
    return torch.where(has, columns, -1).max(-1).values


def ppo_token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """PPO per-token rewards [B, T]: r_t = -beta * kl_t on response tokens, plus scores[b] at the last one.

    scores [B] sequence scores; kl [B, T] per-token KL estimates (``kl_per_token``).  Detached: rewards
    are constants of the rollout.  KL-shaped reward: Ziegler et al. 2019, Eq. 2; Ouyang et al. 2022, Eq. 2.
    """
    m = _fmask(mask, kl)
    last = last_response_index(mask)
    rewards = -beta * kl.detach() * m
    rows = torch.arange(kl.shape[0], device=kl.device)
    return rewards.index_put((rows, last), scores.detach().to(rewards.dtype), accumulate=True)


@torch.no_grad()
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over each row's response tokens: -> (advantages, returns) [B, T].

    Schulman et al. 2016, Eq. 16: delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1},
    where t + 1 is the row's *next response token* (columns outside the mask are skipped, whatever their
    values) and V after the last response token is 0.  returns = A + V.  Both 0 outside the mask; detached.
    """
    on = mask.bool()
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        next_adv = torch.where(on[:, t], adv, next_adv)
        next_value = torch.where(on[:, t], values[:, t], next_value)
        advantages[:, t] = torch.where(on[:, t], adv, 0.0)
    returns = (advantages + values) * _fmask(mask, values)
    return advantages, returns


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) over the mask's tokens [B, T] -> [B, T], 0 outside the mask.

    The variance is the unbiased one (Bessel's n - 1), as TRL's ``masked_whiten`` (``masked_var(...,
    unbiased=True)``, TRL <= 0.2x) used for PPO advantages; fewer than 2 tokens is an error.
    ``shift_mean=False`` adds the mean back (only the scale changes), as TRL does for rewards.
    """
    m = _fmask(mask, x)
    n = m.sum()
    if n < 2:
        raise ValueError(f"whiten needs at least 2 masked tokens, got {int(n)}")
    mean = (x * m).sum() / n
    var = (((x - mean) ** 2) * m).sum() / (n - 1)
    out = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        out = out + mean
    return out * m


def ppo_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    cliprange: float) -> tuple[torch.Tensor, Metrics]:
    """PPO's clipped surrogate per token [B, T]: max(-A r, -A clip(r, 1 - eps, 1 + eps)), 0 outside the mask.

    r = exp(log pi - log pi_old) against the *stored rollout* log-probs old_logps (detached here), so the
    ratio is 1 only on the first update of a rollout.  Schulman et al. 2017, Eq. 7 (as a loss, negated).
    Metrics (masked means, detached): ``clip_fraction`` (tokens where the clipped term is the larger loss),
    ``approx_kl`` = mean of (log pi - log pi_old)^2 / 2 (the k2 estimator of KL(pi_old || pi)), ``ratio_mean``.
    """
    log_ratio = logps - old_logps.detach()
    ratio = torch.exp(log_ratio)
    advantages = advantages.detach()
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    token_losses = torch.maximum(unclipped, clipped) * _fmask(mask, logps)
    with torch.no_grad():
        metrics = {
            "clip_fraction": masked_mean((clipped > unclipped).to(logps.dtype), mask),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return token_losses, metrics


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(R - V) / Var(R) over the mask's tokens (a detached 0-dim tensor; NaN when R is constant)."""
    with torch.no_grad():
        def var(x):
            return masked_mean((x - masked_mean(x, mask)) ** 2, mask)

        var_returns = var(returns)
        if var_returns == 0:
            return torch.tensor(float("nan"), dtype=values.dtype)
        return 1 - var(returns - values) / var_returns


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   cliprange_value: float) -> tuple[torch.Tensor, Metrics]:
    """Clipped value loss per token [B, T]: 1/2 max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2).

    old_values are the rollout's values, returns R from ``gae`` (both constants).  The clipped value
    objective of PPO's reference implementation (OpenAI baselines ppo2; Ziegler et al. 2019's lm-human-
    preferences).  Metrics: ``value_clip_fraction`` (tokens where the clipped term is the larger),
    ``explained_variance``, ``value_mean``.
    """
    old_values, returns = old_values.detach(), returns.detach()
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    token_losses = 0.5 * torch.maximum(unclipped_loss, clipped_loss) * _fmask(mask, values)
    with torch.no_grad():
        metrics = {
            "value_clip_fraction": masked_mean((clipped_loss > unclipped_loss).to(values.dtype), mask),
            "explained_variance": explained_variance(values, returns, mask),
            "value_mean": masked_mean(values, mask),
        }
    return token_losses, metrics


def ppo_token_losses(batch: PpoTokens, *, cliprange: float, cliprange_value: float, vf_coef: float,
                     ent_coef: float = 0.0) -> tuple[torch.Tensor, Metrics]:
    """PPO's per-token loss [B, T]: clipped policy loss + vf_coef * clipped value loss - ent_coef * entropy.

    The terms are ``ppo_policy_loss`` and ``ppo_value_loss``; the entropy bonus is Schulman et al.
    2017, Eq. 9 (c2 * S).  0 outside the mask.  Aggregate with ``grpo_numerators(..., "dapo")`` and
    ``grpo_denominator(..., "dapo", None)``: the optimizer step's token mean.  Metrics: the policy
    and value losses' own, plus ``policy_loss`` and ``value_loss`` (masked token means, detached).
    """
    b = batch
    policy, metrics = ppo_policy_loss(b.logps, b.old_logps, b.advantages, b.mask, cliprange)
    value, value_metrics = ppo_value_loss(b.values, b.old_values, b.returns, b.mask, cliprange_value)
    token_losses = policy + vf_coef * value.to(policy.dtype)
    if ent_coef:
        if b.entropies is None:
            raise ValueError(f"method.ent_coef = {ent_coef} needs the policy's entropies")
        token_losses = token_losses - ent_coef * b.entropies.to(policy.dtype) * _fmask(b.mask, policy)
    with torch.no_grad():
        metrics.update(value_metrics, policy_loss=masked_mean(policy, b.mask), value_loss=masked_mean(value, b.mask))
    return token_losses, metrics


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 2 or rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"method.group_size must be >= 2 and divide the {tuple(rewards.shape)} rewards, "
                         f"got {group_size!r}")
    return rewards.view(-1, group_size)


def group_advantages(rewards: torch.Tensor, group_size: int, norm: str) -> torch.Tensor:
    """GRPO advantages [N] from rewards [N] in consecutive groups of ``group_size`` samples of one prompt.

    ``group``: (r - mean_g) / (std_g + 1e-4); ``batch``: (r - mean_g) / (std_batch + 1e-4); ``none``: r - mean_g.
    Standard deviations are unbiased (n - 1), as TRL 1.16's ``nanstd`` (``scale_rewards`` group | batch | none).
    Shao et al. 2024 (GRPO, Sec. 4.1.2); ``none`` per Liu et al. 2025 (Dr. GRPO).
    """
    grouped = _groups(rewards, group_size)
    centered = (grouped - grouped.mean(-1, keepdim=True)).flatten()
    if norm == "none":
        return centered
    if norm == "group":
        std = grouped.std(-1, unbiased=True).repeat_interleave(group_size)
    elif norm == "batch":
        std = rewards.std(unbiased=True)
    else:
        raise ValueError(f"method.advantage_norm must be one of {ADVANTAGE_NORMS}, got {norm!r}")
    return centered / (std + GROUP_STD_EPS)


def pair_preferences(rewards: torch.Tensor) -> torch.Tensor:
    """Online DPO's labels (Guo et al. 2024): rewards [N] of consecutive pairs (two samples of one prompt) ->
    [N] with +1 for the higher-rewarded sample of each pair, -1 for the other, and 0 for both when tied."""
    if rewards.dim() != 1 or rewards.numel() % 2:
        raise ValueError(f"pair_preferences takes an even number of rewards, got shape {tuple(rewards.shape)}")
    pairs = rewards.view(-1, 2)
    sign = torch.sign(pairs[:, 0] - pairs[:, 1])
    return torch.stack([sign, -sign], -1).flatten()


def zero_signal_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Fraction of groups whose rewards are all equal (advantage 0 for every sample: no learning signal)."""
    grouped = _groups(rewards, group_size)
    return float((grouped.max(-1).values == grouped.min(-1).values).double().mean())


def grpo_token_losses(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor | None,
                      advantages: torch.Tensor, mask: torch.Tensor, eps_low: float, eps_high: float,
                      beta: float, *, kl_ratio_correction: bool = True) -> tuple[torch.Tensor, Metrics]:
    """GRPO per-token loss [B, T]: -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) + beta * r * k3(pi, pi_ref).

    r = exp(log pi - log pi_old) against the stored rollout log-probs; advantages [B] one per sequence.
    Shao et al. 2024, Eq. 3 (with the k3 KL of Eq. 4); asymmetric clipping from Yu et al. 2025 (DAPO);
    term for term TRL 1.16 GRPOTrainer (token-level importance sampling).  0 outside the mask.
    The KL term is weighted by the (unclipped, differentiable) ratio r, as TRL 1.16 does by default
    (``use_bias_correction_kl=True``, after DeepSeek-V3.2): samples come from pi_old, and r * k3 makes
    its value and gradient unbiased for KL(pi || pi_ref).  ``kl_ratio_correction=False`` gives Shao et
    al.'s plain beta * k3.  The correction changes the gradient even on-policy, where r = 1.
    Metrics (masked token means, detached): ``clip_ratio/low_mean`` (r < 1 - eps_low with A < 0),
    ``clip_ratio/high_mean`` (r > 1 + eps_high with A > 0), ``clip_ratio/region_mean`` (either), and
    ``kl`` (mean of the KL term over beta, r * k3 or k3, as TRL logs it) when beta > 0.
    """
    if beta < 0:
        raise ValueError(f"method.beta must be >= 0, got {beta!r}")
    if beta > 0 and ref_logps is None:
        raise ValueError(f"grpo with method.beta = {beta} > 0 needs reference log-probs (ref_logps)")
    ratio = torch.exp(logps - old_logps.detach())
    adv = advantages.detach().to(logps.dtype).unsqueeze(-1)
    token_losses = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)
    if beta > 0:
        kl = kl_per_token(logps, ref_logps.detach(), "k3")
        if kl_ratio_correction:
            kl = kl * ratio
        token_losses = token_losses + beta * kl
    token_losses = token_losses * _fmask(mask, logps)
    with torch.no_grad():
        low = (ratio < 1 - eps_low) & (adv < 0)
        high = (ratio > 1 + eps_high) & (adv > 0)
        metrics = {
            "clip_ratio/low_mean": masked_mean(low.to(logps.dtype), mask),
            "clip_ratio/high_mean": masked_mean(high.to(logps.dtype), mask),
            "clip_ratio/region_mean": masked_mean((low | high).to(logps.dtype), mask),
        }
        if beta > 0:
            metrics["kl"] = masked_mean(kl, mask)
    return token_losses, metrics


def _check_aggregation(aggregation: str) -> None:
    if aggregation not in GRPO_AGGREGATIONS:
        raise ValueError(f"method.loss_aggregation must be one of {GRPO_AGGREGATIONS}, got {aggregation!r}")


def grpo_numerators(token_losses: torch.Tensor, mask: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Per-sequence numerators [B] of one minibatch; divide the step's sum by ``grpo_denominator``.

    ``grpo``: the sequence's token mean (0 for an empty one); ``bnpo``, ``dapo``, ``dr_grpo``: its token sum.
    """
    _check_aggregation(aggregation)
    m = _fmask(mask, token_losses)
    sums = (token_losses * m).sum(-1)
    return sums / m.sum(-1).clamp(min=1) if aggregation == "grpo" else sums


def grpo_denominator(masks: list[torch.Tensor], aggregation: str, max_completion_length: int | None) -> float:
    """The divisor shared by every minibatch of one optimizer step, from the masks [B_i, T_i] of all of them.

    ``grpo``: the step's sequence count; ``bnpo``, ``dapo``: its response-token count;
    ``dr_grpo``: sequence count * max_completion_length (Liu et al. 2025, Dr. GRPO).  At least 1.
    """
    _check_aggregation(aggregation)
    sequences = sum(m.shape[0] for m in masks)
    if aggregation == "grpo":
        return float(max(sequences, 1))
    if aggregation == "dr_grpo":
        longest = max((int(m.sum(-1).max()) for m in masks if m.numel()), default=0)
        if not max_completion_length or longest > max_completion_length:
            raise ValueError(f"dr_grpo needs max_completion_length >= the longest response ({longest}), "
                             f"got {max_completion_length!r}")
        return float(max(sequences, 1) * max_completion_length)
    return float(max(sum(float(m.sum()) for m in masks), 1.0))


@dataclass
class AdaptiveKLController:
    """The KL coefficient beta, adapted toward a target KL (Ziegler et al. 2019, Sec. 2.2), or fixed.

    With ``target`` None, ``update`` leaves beta alone (a fixed controller).  Otherwise
    e = clip((KL - target) / target, -0.2, 0.2) and beta <- beta * (1 + e * n_steps / horizon).
    """

    value: float
    target: float | None = None
    horizon: int = 10000

    def update(self, current_kl: float, n_steps: int) -> float:
        """Adapt beta after n_steps more samples whose mean KL was current_kl; returns the new beta."""
        if self.target is not None:
            error = min(max((current_kl - self.target) / self.target, -0.2), 0.2)
            self.value *= 1 + error * n_steps / self.horizon
        return self.value
