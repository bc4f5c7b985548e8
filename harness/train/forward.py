"""From encoded examples to a method's per-example loss numerators.

The bridge between the loop and the pure losses: collate a micro-batch, run
the model once (chosen and rejected concatenated into one forward pass),
gather log-probs, and call the method's loss.  ``step_denominator`` is the
other half of optimizer-step normalization.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.data.collate import collate_pairs, collate_sft
from harness.data.packing import packed_logits
from harness.methods import (
    entropy_from_logits,
    reduce_logps,
    sequence_logps,
    sum_sq_probs,
    target_mask,
    token_logps,
    with_sft_weight,
)
from harness.methods.registry import MethodEntry
from harness.methods.step_inputs import kl_pair_logps, kto_sequence_logps
from harness.train.reward_model import forward_rm


def target_count(example, train_on_prompt: bool = False) -> int:
    """How many target tokens an SFT example contributes to the loss."""
    if train_on_prompt:
        return len(example.prompt_ids) + len(example.response_ids) - 1
    return sum(example.target_mask)


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
                   ref: torch.Tensor | None, device, with_entropy: bool = False, extra: dict | None = None):
    """One micro-batch: (per-example loss numerators [B], detached metrics, input tokens).

    ``extra`` holds the step's batch-relative loss inputs for this micro-batch
    (``harness.methods.step_inputs``: the KTO ``kl``, IW-SFT ``weights``).
    """
    extra = extra or {}
    if method.batch_kind == "sft":
        return _forward_sft(model, method, params, examples, pad_id, device, with_entropy, extra)
    if method.batch_kind == "pairs":
        return _forward_pairs(model, method, params, examples, pad_id, ref, device, with_entropy)
    if method.batch_kind == "kto":
        return _forward_kto(model, method, params, examples, pad_id, ref, device, with_entropy, extra)
    if method.batch_kind == "rm":
        return forward_rm(model, method, params, examples, pad_id, device, extra)
    raise ValueError(f"batch kind {method.batch_kind!r} is not supported by the offline loop yet")


def _sft_logits(model, batch: dict, capacity: int | None, pad_id: int) -> torch.Tensor:
    """[B, T, V] logits; with ``capacity`` (train.packing) computed on packed rows, same layout."""
    if capacity:
        return packed_logits(model, batch["input_ids"], batch["attention_mask"], capacity, pad_id)
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _forward_sft(model, method, params, examples, pad_id, device, with_entropy, extra):
    batch = _to(collate_sft(examples, pad_id, train_on_prompt=params["train_on_prompt"]), device)
    # "packing_capacity" is not a method.* key: train_stage adds it when train.packing is on.
    logits = _sft_logits(model, batch, params.get("packing_capacity"), pad_id)
    tlp = token_logps(logits, batch["input_ids"])
    mask = target_mask(batch["loss_mask"])
    kwargs = {"normalization": params["loss_normalization"], **extra}
    if "sum_sq_probs" in method.extra_inputs:
        kwargs["sum_sq_probs"] = sum_sq_probs(logits)
    numerators, metrics = method.loss(tlp, mask, **kwargs)
    if with_entropy:
        metrics["entropy"] = entropy_from_logits(logits, mask)
    return numerators, metrics, int(batch["attention_mask"].sum())


@dataclass
class PairForward:
    """One forward pass over a pair batch; rows 0..B-1 are chosen, B..2B-1 rejected."""

    sums: torch.Tensor  # [2B] summed response-token log-probs
    counts: torch.Tensor  # [2B] response-token counts
    token_logps: torch.Tensor  # [2B, T-1]
    mask: torch.Tensor  # [2B, T-1] response target mask
    attention: torch.Tensor  # [2B, T] attention mask
    logits: torch.Tensor  # [2B, T, V]

    @property
    def tokens(self) -> int:
        return int(self.attention.sum())


def pair_logps(model, examples: list, pad_id: int, device) -> PairForward:
    """Token log-prob sums and counts of chosen and rejected, from one concatenated forward pass."""
    batch = _to(collate_pairs(examples, pad_id), device)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    tlp = token_logps(logits, batch["input_ids"])
    mask = target_mask(batch["loss_mask"])
    return PairForward(sequence_logps(tlp, mask, "sum"), mask.sum(-1), tlp, mask, batch["attention_mask"], logits)


def chosen_nll(out: PairForward, n: int, on_prompt: bool) -> torch.Tensor:
    """Mean token NLL of each chosen sequence [B]: over its response, or (on_prompt) every token but the first."""
    if not on_prompt:
        return -reduce_logps(out.sums[:n], out.counts[:n], "mean")
    return -sequence_logps(out.token_logps[:n], target_mask(out.attention[:n]), "mean")


def _forward_pairs(model, method, params, examples, pad_id, ref, device, with_entropy):
    out = pair_logps(model, examples, pad_id, device)
    n = len(examples)
    reduction = params["logprob_reduction"] or method.default_reduction
    logps = reduce_logps(out.sums, out.counts, reduction)
    args = [logps[:n], logps[n:]]
    if method.needs_ref:
        ref = ref.to(device)  # [B, 4]: chosen sum, chosen count, rejected sum, rejected count
        args += [reduce_logps(ref[:, 0], ref[:, 1], reduction), reduce_logps(ref[:, 2], ref[:, 3], reduction)]
    if "nll_chosen" in method.extra_inputs:
        args.append(chosen_nll(out, n, params.get("nll_on_prompt", False)))
    kwargs = {k: params[k] for k in method.loss_params}
    numerators, metrics = method.loss(*args, **kwargs)
    # method.sft_weight: + lambda * mean-token NLL of the chosen response (RPO-style).
    numerators = with_sft_weight(numerators, chosen_nll(out, n, False), params.get("sft_weight", 0.0))
    metrics["response_length"] = out.counts.float().mean().item()
    if method.needs_ref:
        # k1 estimate of KL(pi || pi_ref) on the batch's (dataset) responses: mean of sum_t (log pi - log pi_ref).
        metrics["kl"] = (out.sums.detach() - torch.cat([ref[:, 0], ref[:, 2]]).to(out.sums.dtype)).mean()
    if with_entropy:
        metrics["entropy"] = entropy_from_logits(out.logits, out.mask)
    return numerators, metrics, out.tokens


def _forward_kto(model, method, params, examples, pad_id, ref, device, with_entropy, extra):
    sums, counts, logits, mask = kto_sequence_logps(model, [e.prompt_ids for e in examples],
                                              [e.completion_ids for e in examples], pad_id, device)
    reduction = params["logprob_reduction"] or method.default_reduction
    ref = ref.to(device)  # [B, 2]: the own completion's reference sum and count
    desirable = torch.tensor([bool(e.label) for e in examples], device=device)
    kwargs = {k: params[k] for k in method.loss_params}
    numerators, metrics = method.loss(reduce_logps(sums, counts, reduction), reduce_logps(ref[:, 0], ref[:, 1], reduction),
                                      desirable, kl=extra["kl"], **kwargs)
    # method.sft_weight: + lambda * mean-token NLL of the desirable completions.
    nll = -reduce_logps(sums, counts, "mean") * desirable.to(sums.dtype)
    numerators = with_sft_weight(numerators, nll, params.get("sft_weight", 0.0))
    metrics["response_length"] = counts.float().mean().item()
    if with_entropy:
        metrics["entropy"] = entropy_from_logits(logits, mask)
    return numerators, metrics, sum(len(e.prompt_ids) + len(e.completion_ids) for e in examples)


@torch.no_grad()
def kto_reference_stats(model, examples: list, pad_id: int, device, batch_size: int = 16) -> torch.Tensor:
    """Per-example reference statistics [N, 2] of KTO rows: the own completion's sum and count."""
    pairs = [(i, i) for i in range(len(examples))]
    return kl_pair_logps(model, examples, pairs, pad_id, device, batch_size).float()


@torch.no_grad()
def reference_stats(model, examples: list, pad_id: int, device, batch_size: int = 16) -> torch.Tensor:
    """Per-pair reference statistics [N, 4]: chosen sum, chosen count, rejected sum, rejected count.

    Sums and counts (not reduced values) so one cache entry serves both
    ``sum`` and ``mean`` reductions.
    """
    rows = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        out = pair_logps(model, chunk, pad_id, device)
        sums, counts = out.sums, out.counts
        n = len(chunk)
        rows.append(torch.stack([sums[:n], counts[:n].float(), sums[n:], counts[n:].float()], dim=1).float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0, 4)
