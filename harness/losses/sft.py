"""SFT loss: token negative log-likelihood, normalized over the whole optimizer step.

The normalization contract (DESIGN.md, "Optimizer-step normalization").  With
gradient accumulation a step spans several micro-batches, so no loss function
can see the step's denominator.  Losses therefore return per-example
*numerators*, and the offline loop divides by one denominator per step
(``harness.batches.step_denominator``):

    denom = step_denominator(method, params, [examples of every micro-batch of the step])
    for each micro-batch:
        per_example, metrics = sft_loss(logps, mask, normalization=normalization)
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

from harness.losses.logprobs import token_counts

NORMALIZATIONS = ("token", "sequence")


def sft_token_losses(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token NLL at target positions: [B, T - 1], [B, T - 1] -> [B, T - 1], 0 where mask is 0.

    The standard maximum-likelihood objective -log p_y (DESIGN.md, "SFT family").
    """
    return -token_logps * mask.to(token_logps.dtype)


def sft_loss(
    token_logps: torch.Tensor, mask: torch.Tensor, *, normalization: str = "token"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example SFT loss numerators and detached metrics.

    Args:
        token_logps: [B, T - 1] from ``token_logps``.
        mask: [B, T - 1] target mask from ``target_mask``.
        normalization: ``"token"`` -> per_example[b] = sum_t NLL[b, t];
            ``"sequence"`` -> per_example[b] = sum_t NLL[b, t] / n_b (0 if n_b = 0).
            Divide the step's sum by the step's denominator (module docstring).
    Returns:
        per_example [B] (with grad), and metrics (0-dim, detached):
        ``nll`` = token-weighted mean NLL of this batch, ``response_length`` =
        mean target tokens per example.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"method.loss_normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    nll_sums = sft_token_losses(token_logps, mask).sum(-1)
    counts = token_counts(mask).to(nll_sums.dtype)
    if normalization == "token":
        per_example = nll_sums
    else:
        per_example = nll_sums / counts.clamp(min=1)
    metrics = {
        "nll": (nll_sums.sum() / counts.sum().clamp(min=1)).detach(),
        "response_length": counts.mean().detach(),
    }
    return per_example, metrics
