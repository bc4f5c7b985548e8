"""SFT loss: token negative log-likelihood, normalized over the whole optimizer step.

The normalization contract (DESIGN.md, "Optimizer-step normalization").  With
gradient accumulation a step spans several micro-batches, so no loss function
can see the step's denominator.  Losses therefore return per-example
*numerators*, and the offline loop divides by one denominator per step
(``harness.train.forward.step_denominator``):

    denom = step_denominator(method, params, [examples of every micro-batch of the step])
    for each micro-batch:
        per_example, metrics = sft_loss(SftLogps(logps, mask), normalization=normalization)
        (per_example.sum() / denom).backward()

* ``"token"``: per_example = summed token NLL of the example; denom = the
  step's response-token count.  The step loss is the token mean over the step.
* ``"sequence"``: per_example = mean token NLL of the example; denom = the
  step's example count.  The step loss is the mean over examples of each
  example's token mean.

Either way ``batch_size: b, grad_accum: k`` gives the same gradient as
``batch_size: k*b, grad_accum: 1``.  Under several processes the loop must sum
the denominator over processes too (and scale by the process count, since DDP
averages gradients).
"""

from __future__ import annotations

import torch

from harness.methods.batches import SftLogps
from harness.methods.logprobs import off_target_probs, token_counts

NORMALIZATIONS = ("token", "sequence")


def sft_token_losses(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token NLL at target positions: [B, T - 1], [B, T - 1] -> [B, T - 1], 0 where mask is 0.

    The standard maximum-likelihood objective -log p_y (DESIGN.md, "SFT family").
    """
    return -token_logps * mask.to(token_logps.dtype)


def _reduce_token_losses(token_losses: torch.Tensor, mask: torch.Tensor, normalization: str):
    """Per-example numerators of masked token losses [B, T - 1] -> [B], plus length metrics.

    ``"token"``: the example's summed token loss; ``"sequence"``: its token mean (0 if no targets).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"method.loss_normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    sums = (token_losses * mask.to(token_losses.dtype)).sum(-1)
    counts = token_counts(mask).to(sums.dtype)
    per_example = sums if normalization == "token" else sums / counts.clamp(min=1)
    metrics = {
        "token_loss": (sums.sum() / counts.sum().clamp(min=1)).detach(),
        "response_length": counts.mean().detach(),
    }
    return per_example, metrics


def sft_loss(batch: SftLogps, *, normalization: str = "token") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example SFT loss numerators and detached metrics.

    Args:
        batch: ``token_logps`` [B, T - 1] from ``token_logps``, ``mask`` [B, T - 1] from ``target_mask``.
        normalization: ``"token"`` -> per_example[b] = sum_t NLL[b, t];
            ``"sequence"`` -> per_example[b] = sum_t NLL[b, t] / n_b (0 if n_b = 0).
            Divide the step's sum by the step's denominator (module docstring).
    Returns:
        per_example [B] (with grad), and metrics (0-dim, detached):
        ``nll`` = token-weighted mean NLL of this batch, ``response_length`` =
        mean target tokens per example.
    """
    per_example, metrics = _reduce_token_losses(-batch.token_logps, batch.mask, normalization)
    metrics["nll"] = metrics.pop("token_loss")
    return per_example, metrics


def _nll_metric(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(token_logps.dtype)
    return (-(token_logps.detach() * mask).sum() / mask.sum().clamp(min=1))


def dft_loss(batch: SftLogps, *, normalization: str = "token") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dynamic fine-tuning: token loss -sg(p_y) * log p_y, reduced like ``sft_loss``.

    Shapes as ``sft_loss``.  Wu et al. 2025, "On the generalization of SFT ...", arXiv 2508.05629, Eq. 9.
    Metrics: ``token_loss`` (token mean of the DFT loss), ``nll``, ``response_length``.
    """
    token_logps, mask = batch.token_logps, batch.mask
    token_losses = -token_logps.exp().detach() * token_logps
    per_example, metrics = _reduce_token_losses(token_losses, mask, normalization)
    metrics["nll"] = _nll_metric(token_logps, mask)
    return per_example, metrics


def hellinger_sft_loss(
    batch: SftLogps, *, normalization: str = "token"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token loss 1 - sqrt(p_y) = 1 - exp(log p_y / 2), reduced like ``sft_loss``.

    Half the squared Hellinger distance between the one-hot target e_y and the
    next-token distribution q: (1/2) sum_v (sqrt(e_v) - sqrt(q_v))^2 = 1 - sqrt(q_y),
    since sum_v q_v = 1.  Shapes as ``sft_loss``.
    """
    token_logps, mask = batch.token_logps, batch.mask
    per_example, metrics = _reduce_token_losses(1 - (token_logps / 2).exp(), mask, normalization)
    metrics["nll"] = _nll_metric(token_logps, mask)
    return per_example, metrics


def brier_sft_loss(batch: SftLogps, *, normalization: str = "token") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Brier score of the next-token distribution q: ||q - e_y||^2 = (1 - p_y)^2 + sum_{v != y} q_v^2.

    Args:
        batch: ``token_logps`` [B, T - 1] log p_y, ``mask`` [B, T - 1], ``logits`` [B, T, V] and
            ``input_ids`` [B, T] (the targets y), reduced at once to 1 - p_y = sum_{v != y} q_v and
            sum_{v != y} q_v^2 [B, T - 1] (``harness.methods.off_target_probs``).
    Brier 1950; the proper scoring rule applied per token.  Reduced like ``sft_loss``.
    Both terms come from the off-target probabilities, never as 1 - p_y or sum_v q_v^2 - p_y^2:
    those cancel in float32 as p_y -> 1 (at p_y = 0.99986 the gradient was off by 140%).
    """
    if batch.logits is None or batch.input_ids is None:
        raise ValueError("brier-sft needs the batch's logits and input_ids (SftLogps.logits, SftLogps.input_ids)")
    token_logps, mask = batch.token_logps, batch.mask
    miss, off_target_squares = off_target_probs(batch.logits, batch.input_ids)
    token_losses = miss**2 + off_target_squares
    per_example, metrics = _reduce_token_losses(token_losses, mask, normalization)
    metrics["nll"] = _nll_metric(token_logps, mask)
    return per_example, metrics


def self_normalized_weights(log_weights: torch.Tensor) -> torch.Tensor:
    """IW-SFT weights normalized over the optimizer step's examples: [N] log w -> [N] w_i / mean(w).

    Computed as N * softmax(log w), so w = exp(r / tau) from rewards cannot overflow.
    A data weight of 0 is log w = -inf (weight 0).  Every weight 0 is an error (nothing to learn).
    """
    if torch.isneginf(log_weights).all():
        raise ValueError("iw-sft: every example of the optimizer step has weight 0")
    return log_weights.numel() * torch.softmax(log_weights.double(), dim=0).to(log_weights.dtype)


def iw_sft_loss(batch: SftLogps, *, normalization: str = "token") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Importance-weighted SFT: per_example [B] = w_i * (the example's ``sft_loss`` numerator).

    Args: as ``sft_loss``, with ``batch.weights`` [B] already self-normalized over the step
    (``self_normalized_weights``), treated as constants.
    SFT as importance-weighted MLE with w ~ p_data / p_ref (DESIGN.md, "iw-sft").
    """
    if batch.weights is None:
        raise ValueError("iw-sft needs the step's example weights (SftLogps.weights)")
    per_example, metrics = sft_loss(batch, normalization=normalization)
    weights = batch.weights.detach().to(per_example.dtype)
    metrics["weight_mean"], metrics["weight_max"] = weights.mean(), weights.max()
    return weights * per_example, metrics
