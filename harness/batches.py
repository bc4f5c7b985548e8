"""From encoded examples to a method's per-example loss numerators.

The bridge between the loop and the pure losses: collate a micro-batch, run
the model once (chosen and rejected concatenated into one forward pass),
gather log-probs, and call the method's loss.  ``step_denominator`` is the
other half of optimizer-step normalization.
"""

from __future__ import annotations

import torch

from harness.collate import collate_pairs, collate_sft
from harness.losses import (
    entropy_from_logits,
    reduce_logps,
    sequence_logps,
    target_mask,
    token_logps,
    with_sft_weight,
)
from harness.methods import MethodEntry


def target_count(example, train_on_prompt: bool = False) -> int:
    """How many target tokens an SFT example contributes to the loss."""
    if train_on_prompt:
        return len(example.prompt_ids) + len(example.response_ids) - 1
    return len(example.response_ids)


def step_denominator(method: MethodEntry, params: dict, batches: list[list]) -> float:
    """The divisor shared by every micro-batch of one optimizer step.

    Token-normalized SFT divides by the response tokens of the whole step;
    everything else by the step's example count.
    """
    if method.batch_kind == "sft" and params.get("loss_normalization") == "token":
        on_prompt = params.get("train_on_prompt", False)
        total = sum(target_count(ex, on_prompt) for batch in batches for ex in batch)
    else:
        total = sum(len(batch) for batch in batches)
    return float(max(total, 1))  # an empty step keeps its zero numerator at 0, not NaN


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def forward_method(model, method: MethodEntry, params: dict, examples: list, pad_id: int,
                   ref: torch.Tensor | None, device, with_entropy: bool = False):
    """One micro-batch: (per-example loss numerators [B], detached metrics, input tokens)."""
    if method.batch_kind == "sft":
        return _forward_sft(model, method, params, examples, pad_id, device, with_entropy)
    if method.batch_kind == "pairs":
        return _forward_pairs(model, method, params, examples, pad_id, ref, device, with_entropy)
    raise ValueError(f"batch kind {method.batch_kind!r} is not supported by the offline loop yet")


def _forward_sft(model, method, params, examples, pad_id, device, with_entropy):
    batch = _to(collate_sft(examples, pad_id, train_on_prompt=params["train_on_prompt"]), device)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    tlp = token_logps(logits, batch["input_ids"])
    mask = target_mask(batch["loss_mask"])
    numerators, metrics = method.loss(tlp, mask, normalization=params["loss_normalization"])
    if with_entropy:
        metrics["entropy"] = entropy_from_logits(logits, mask)
    return numerators, metrics, int(batch["attention_mask"].sum())


def pair_logps(model, examples: list, pad_id: int, device):
    """Token log-prob sums and counts of chosen and rejected, from one forward pass.

    Returns (sums [2B], counts [2B], logits [2B, T, V], mask [2B, T-1], input
    tokens); rows 0..B-1 are chosen, B..2B-1 rejected.
    """
    batch = _to(collate_pairs(examples, pad_id), device)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    tlp = token_logps(logits, batch["input_ids"])
    mask = target_mask(batch["loss_mask"])
    return sequence_logps(tlp, mask, "sum"), mask.sum(-1), logits, mask, int(batch["attention_mask"].sum())


def _forward_pairs(model, method, params, examples, pad_id, ref, device, with_entropy):
    sums, counts, logits, mask, tokens = pair_logps(model, examples, pad_id, device)
    n = len(examples)
    reduction = params["logprob_reduction"] or method.default_reduction
    logps = reduce_logps(sums, counts, reduction)
    args = [logps[:n], logps[n:]]
    if method.needs_ref:
        ref = ref.to(device)  # [B, 4]: chosen sum, chosen count, rejected sum, rejected count
        args += [reduce_logps(ref[:, 0], ref[:, 1], reduction), reduce_logps(ref[:, 2], ref[:, 3], reduction)]
    kwargs = {k: params[k] for k in method.loss_params}
    numerators, metrics = method.loss(*args, **kwargs)
    # method.sft_weight: + lambda * mean-token NLL of the chosen response (RPO-style).
    numerators = with_sft_weight(numerators, -reduce_logps(sums[:n], counts[:n], "mean"), params.get("sft_weight", 0.0))
    metrics["response_length"] = counts.float().mean().item()
    if with_entropy:
        metrics["entropy"] = entropy_from_logits(logits, mask)
    return numerators, metrics, tokens


@torch.no_grad()
def reference_stats(model, examples: list, pad_id: int, device, batch_size: int = 16) -> torch.Tensor:
    """Per-pair reference statistics [N, 4]: chosen sum, chosen count, rejected sum, rejected count.

    Sums and counts (not reduced values) so one cache entry serves both
    ``sum`` and ``mean`` reductions.
    """
    rows = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        sums, counts, *_ = pair_logps(model, chunk, pad_id, device)
        n = len(chunk)
        rows.append(torch.stack([sums[:n], counts[:n].float(), sums[n:], counts[n:].float()], dim=1).float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0, 4)
