"""Preference losses on pairs of sequence log-probs (TRL's definitions).

Every loss here is a pure function of a ``PairLogps`` record: the policy's and
the reference's [B] sequence log-probs of the chosen and rejected responses
(reduced with ``sequence_logps`` by the caller, sum or mean per
``method.logprob_reduction``), and returns ``(per_example [B], metrics)``.  per_example is averaged over the
optimizer step's examples by the loop (``harness.train.forward.step_denominator``).

Notation (DESIGN.md, "Method definitions"):
    h = (log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r)),   z = beta * h.

A new pair loss is one small function: compute h with ``margin_of``, its
loss from h, and its metrics with ``reward_metrics``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.methods.batches import PairLogps

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


def margin_of(batch: PairLogps) -> torch.Tensor:
    """h of a pair batch [B]; it needs the reference log-probs."""
    if batch.ref_chosen is None or batch.ref_rejected is None:
        raise ValueError("this loss needs reference log-probs (PairLogps.ref_chosen, ref_rejected)")
    return logratio_margin(batch.chosen, batch.rejected, batch.ref_chosen, batch.ref_rejected)


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"method.beta must be > 0, got {beta!r}")


def dpo_loss(
    batch: PairLogps,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """DPO, or conservative DPO when label_smoothing > 0.

    Args:
        batch: chosen, rejected, ref_chosen, ref_rejected: [B] sequence log-probs.
        beta: inverse temperature of the implicit reward, > 0.
        label_smoothing: eps in [0, 0.5], the assumed probability that a label is flipped.
    Returns:
        per_example [B] = -(1 - eps) log sigma(z) - eps log sigma(-z), z = beta * h,
        and ``reward_metrics`` with rewards beta * (log pi - log pi_ref).
    Gradient (eps = 0): d loss / d batch.chosen = beta * (sigma(z) - 1).
    """
    _check_beta(beta)
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"method.label_smoothing must be in [0, 0.5], got {label_smoothing!r}")
    z = beta * margin_of(batch)
    # DPO: Rafailov et al. 2023, Eq. 7.  Conservative DPO (labels flipped with
    # probability eps): Mitchell 2023, "A note on DPO with noisy preferences", Eq. 3.
    per_example = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    return per_example, _implicit_reward_metrics(batch, beta)


def _implicit_reward_metrics(batch: PairLogps, beta: float) -> Metrics:
    """``reward_metrics`` with DPO's implicit rewards beta * (log pi - log pi_ref)."""
    pc, pr = batch.chosen, batch.rejected
    return reward_metrics(beta * (pc - batch.ref_chosen), beta * (pr - batch.ref_rejected), pc, pr)


def robust_loss(
    batch: PairLogps,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """Robust DPO (rDPO): an unbiased DPO loss under labels flipped with probability eps.

    Args: batch with four [B] sequence log-probs; beta > 0; label_smoothing eps in [0, 0.5).
    Returns: per_example [B] = (-(1 - eps) log sigma(z) + eps log sigma(-z)) / (1 - 2 eps), and DPO's metrics.
    """
    _check_beta(beta)
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"method.label_smoothing must be in [0, 0.5) for robust, got {label_smoothing!r}")
    z = beta * margin_of(batch)
    # Chowdhury et al. 2024, "Provably robust DPO", Eq. 8 (TRL's loss_type="robust").
    eps = label_smoothing
    per_example = (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
    return per_example, _implicit_reward_metrics(batch, beta)


def ipo_loss(
    batch: PairLogps,
    *,
    beta: float,
) -> tuple[torch.Tensor, Metrics]:
    """IPO: squared distance of the log-ratio margin h to 1 / (2 beta).

    Args: batch with four [B] sequence log-probs (mean-reduced by default, as TRL's DPOTrainer does; "sum"
    gives OpenRLHF's variant); beta > 0 is IPO's tau.
    Returns: per_example [B] = (h - 1 / (2 beta))^2, and DPO's metrics.
    """
    _check_beta(beta)
    h = margin_of(batch)
    # Azar et al. 2023, "A general theoretical paradigm ...", Eq. 17.
    per_example = (h - 1 / (2 * beta)) ** 2
    return per_example, _implicit_reward_metrics(batch, beta)


def hinge_loss(
    batch: PairLogps,
    *,
    beta: float,
) -> tuple[torch.Tensor, Metrics]:
    """Hinge (SLiC-style) loss on the scaled margin: per_example [B] = max(0, 1 - beta * h).

    Zhao et al. 2023 (SLiC-HF, Eq. 1 with the reference log-ratio, as TRL's loss_type="hinge").
    """
    _check_beta(beta)
    z = beta * margin_of(batch)
    per_example = torch.relu(1 - z)
    return per_example, _implicit_reward_metrics(batch, beta)


def simpo_loss(batch: PairLogps, *, beta: float, gamma: float = 0.5) -> tuple[torch.Tensor, Metrics]:
    """SimPO, reference-free: per_example [B] = -log sigma(beta * (pi(c) - pi(r)) - gamma).

    Args: batch.chosen, batch.rejected: [B] sequence log-probs (mean token log-probs by default,
    the reference fields unused); beta > 0; gamma the
    target reward margin.  Meng et al. 2024, "SimPO", Eq. 6 (TRL's CPOTrainer loss_type="simpo",
    cpo_alpha 0).  Rewards are beta * log pi, as CPOTrainer logs them.
    """
    _check_beta(beta)
    policy_chosen, policy_rejected = batch.chosen, batch.rejected
    per_example = -F.logsigmoid(beta * (policy_chosen - policy_rejected) - gamma)
    return per_example, reward_metrics(beta * policy_chosen, beta * policy_rejected, policy_chosen, policy_rejected)


# The largest mean log-prob ORPO accepts: log-odds diverge as the probability reaches 1.
_ORPO_MAX_LOGP = -1e-6


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stably: [any] -> same shape.

    Maechler 2012, "Accurately computing log(1 - exp(-|a|))": log(-expm1(x)) near 0,
    log1p(-exp(x)) below -log 2.
    """
    # torch.where evaluates both branches; clamp each to its own domain so no NaN reaches backward.
    near = torch.log(-torch.expm1(x.clamp(min=-math.log(2))))
    far = torch.log1p(-torch.exp(x.clamp(max=-math.log(2))))
    return torch.where(x > -math.log(2), near, far)


def orpo_loss(batch: PairLogps, *, beta: float, nll_on_prompt: bool = False) -> tuple[torch.Tensor, Metrics]:
    """ORPO: NLL(chosen) - beta * log sigma(log-odds(c) - log-odds(r)).

    Args:
        batch.chosen, batch.rejected: [B] mean token log-probs m (< 0), log-odds(y) = m - log(1 - e^m).
        batch.nll_chosen: [B] the chosen response's NLL over its response tokens;
            batch.nll_chosen_with_prompt: the same over prompt + response, used with nll_on_prompt.
        beta: ORPO's lambda, > 0.
        nll_on_prompt: method.nll_on_prompt, the span of the NLL term (True matches the original code).
    Returns: per_example [B]; metrics: rewards beta * m (as TRL's ORPOTrainer), log_odds_ratio
    (mean log sigma of the log-odds difference), log_odds_chosen (mean difference), nll.
    Hong et al. 2024, "ORPO", Eqs. 4-7.
    """
    _check_beta(beta)
    policy_chosen, policy_rejected = batch.chosen, batch.rejected
    nll_chosen = batch.nll_chosen_with_prompt if nll_on_prompt else batch.nll_chosen
    if nll_chosen is None:
        field = "nll_chosen_with_prompt" if nll_on_prompt else "nll_chosen"
        raise ValueError(f"orpo needs the chosen NLL (PairLogps.{field})")
    mc, mr = policy_chosen.clamp(max=_ORPO_MAX_LOGP), policy_rejected.clamp(max=_ORPO_MAX_LOGP)
    log_odds = (mc - log1mexp(mc)) - (mr - log1mexp(mr))
    ratio = F.logsigmoid(log_odds)
    per_example = nll_chosen - beta * ratio
    metrics = reward_metrics(beta * policy_chosen, beta * policy_rejected, policy_chosen, policy_rejected)
    metrics.update(log_odds_ratio=ratio.detach().mean(), log_odds_chosen=log_odds.detach().mean(),
                   nll=nll_chosen.detach().mean())
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
