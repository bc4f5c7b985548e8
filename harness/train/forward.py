"""Forward passes: from encoded examples to a method's typed loss input and per-example loss numerators.

The bridge between the loop and the pure losses: collate a micro-batch, run
the model once (chosen and rejected in one forward pass: padded rows, or
shared-prompt rows that compute each pair's prompt once, ``train.pair_forward``),
gather log-probs into the batch kind's record (``harness.methods.batches``),
and call the method's loss.  Also the no-grad passes that feed a loss: the
reference statistics and the policy's log-probs of KTO's mismatched KL
pairs.  ``step_denominator`` is the other half of optimizer-step
normalization.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.data.collate import collate_pairs, collate_sft, right_pad
from harness.data.packing import (
    SUPPORTED,
    attention_implementation,
    identity_source,
    kept_columns,
    mask_for,
    pack_pairs,
    packed_logits,
    shared_prompt_mask,
    takes_logits_to_keep,
)
from harness.methods import (
    KtoLogps,
    PairLogps,
    SftLogps,
    entropy_from_logits,
    kto_kl_estimate,
    packed_entropy,
    packed_token_logps,
    reduce_logps,
    sequence_logps,
    step_kl_pairs,
    target_mask,
    token_logps,
    with_sft_weight,
)
from harness.methods.registry import MethodEntry
from harness.train.inputs import BatchInputs, ExampleSet, StepInputs, StepState


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
    if method.batch.token_normalized and params.get("loss_normalization") == "token":
        on_prompt = params.get("train_on_prompt", False)
        total = sum(target_count(ex, on_prompt) for batch in batches for ex in batch)
    else:
        total = sum(len(batch) for batch in batches)
    return float(max(total, 1))  # an empty step keeps its zero numerator at 0, not NaN


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _sft_logits(model, batch: dict, capacity: int | None, pad_id: int) -> torch.Tensor:
    """[B, T, V] logits; with ``capacity`` (train.packing) computed on packed rows, same layout."""
    if capacity:
        return packed_logits(model, batch["input_ids"], batch["attention_mask"], capacity, pad_id)
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def forward_sft(model, method: MethodEntry, params: dict, examples: list, inputs: BatchInputs, pad_id: int,
                device, with_entropy: bool = False):
    """One SFT micro-batch: (per-example loss numerators [B], detached metrics, input tokens)."""
    batch = _to(collate_sft(examples, pad_id, train_on_prompt=params["train_on_prompt"]), device)
    # "packing_capacity" is not a method.* key: train_stage adds it when train.packing is on.
    logits = _sft_logits(model, batch, params.get("packing_capacity"), pad_id)
    tlp = token_logps(logits, batch["input_ids"])
    mask = target_mask(batch["loss_mask"])
    record = SftLogps(tlp, mask, logits, inputs.weights, batch["input_ids"])
    numerators, metrics = method.loss(record, **method.loss_kwargs(params))
    if with_entropy:
        metrics["entropy"] = entropy_from_logits(logits, mask)
    return numerators, metrics, int(batch["attention_mask"].sum())


@dataclass
class PairForward:
    """One forward pass over a pair batch, in the ``collate_pairs`` layout: rows 0..B-1 chosen, B..2B-1 rejected.

    ``logits`` are the model's own, ``[R, K, V]``: its R rows (the ``[2B, T]`` padded batch, or the
    shared-prompt rows), at the K columns that some needed target is predicted from (every column when the
    model cannot keep fewer); ``source`` ``[2B, T, 2]`` maps each layout position to its (row, kept column).
    """

    sums: torch.Tensor  # [2B] summed response-token log-probs
    counts: torch.Tensor  # [2B] response-token counts
    token_logps: torch.Tensor  # [2B, T-1]; correct where ``mask`` is (or, for every_position, ``attention``)
    mask: torch.Tensor  # [2B, T-1] response target mask
    attention: torch.Tensor  # [2B, T] attention mask
    logits: torch.Tensor
    source: torch.Tensor
    computed_tokens: int  # positions the model ran, padding included
    pad_tokens: int = 0  # padding positions the model ran

    @property
    def tokens(self) -> int:
        """The pairs' tokens as two sequences each (the same count in every layout)."""
        return int(self.attention.sum())

    def entropy(self) -> torch.Tensor:
        return packed_entropy(self.logits, self.source, self.mask)


def pair_layout(model, layout: str) -> str:
    """``train.pair_forward`` resolved: auto is shared_prompt where the attention takes a 4D mask, else padded."""
    if layout == "auto":
        return "shared_prompt" if attention_implementation(model) in SUPPORTED else "padded"
    return layout


def pair_logps(model, examples: list, pad_id: int, device, layout: str = "auto",
               every_position: bool = False) -> PairForward:
    """Token log-prob sums and counts of chosen and rejected, from one forward pass.

    ``layout`` (``train.pair_forward``): padded runs the ``[2B, T]`` batch of ``collate_pairs``;
    shared_prompt runs each pair as one ``[prompt, chosen, rejected]`` segment of packed rows
    (``harness.data.packing.pack_pairs``), computing the prompt once, with no padding but each
    row's tail up to the longest row.  Both give the same per-token log-probs, in the padded layout.

    The LM head runs only at the positions that predict a response token (``logits_to_keep``, where the
    model takes it): a prompt's logits feed no loss.  ``every_position``: at every position instead, for a
    loss over the prompt's tokens too (ORPO's ``nll_on_prompt``).
    """
    batch = _to(collate_pairs(examples, pad_id), device)
    mask = target_mask(batch["loss_mask"])
    if pair_layout(model, layout) == "padded":
        ids, inputs = batch["input_ids"], {"attention_mask": batch["attention_mask"]}
        source = identity_source(ids.shape, device)
        real = int(batch["attention_mask"].sum())
    else:
        packed = pack_pairs(examples, pad_id)
        dtype = next(model.parameters()).dtype
        allowed = shared_prompt_mask(packed["segments"], packed["parts"]).to(device)
        ids = packed["input_ids"].to(device)
        inputs = {"position_ids": packed["position_ids"].to(device), "use_cache": False,
                  "attention_mask": mask_for(model, allowed, dtype, "train.pair_forward", "padded")}
        source = packed["source"].to(device)
        real = int((packed["segments"] >= 0).sum())
    if takes_logits_to_keep(model):
        wanted = target_mask(batch["attention_mask"]) if every_position else mask
        keep, source = kept_columns(source, wanted, ids.shape[1])
        if keep is not None:
            inputs["logits_to_keep"] = keep
    logits = model(input_ids=ids, **inputs).logits
    tlp = packed_token_logps(logits, source, batch["input_ids"])
    positions = ids.numel()
    return PairForward(sequence_logps(tlp, mask, "sum"), mask.sum(-1), tlp, mask, batch["attention_mask"], logits,
                       source, positions, positions - real)


def chosen_nll(out: PairForward, n: int, on_prompt: bool) -> torch.Tensor:
    """Mean token NLL of each chosen sequence [B]: over its response, or (on_prompt) every token but the first."""
    if not on_prompt:
        return -reduce_logps(out.sums[:n], out.counts[:n], "mean")
    return -sequence_logps(out.token_logps[:n], target_mask(out.attention[:n]), "mean")


def forward_pairs(model, method: MethodEntry, params: dict, examples: list, inputs: BatchInputs, pad_id: int,
                  device, with_entropy: bool = False):
    """One pair micro-batch: (per-example loss numerators [B], detached metrics, input tokens)."""
    on_prompt = params.get("nll_on_prompt", False)  # ORPO's NLL over the prompt too: its logits are needed
    out = pair_logps(model, examples, pad_id, device, params.get("pair_forward", "auto"), every_position=on_prompt)
    n = len(examples)
    reduction = method.reduction(params)
    logps = reduce_logps(out.sums, out.counts, reduction)
    ref_chosen = ref_rejected = ref = None
    if method.needs_ref:
        ref = inputs.ref.to(device)  # [B, 4]: chosen sum, chosen count, rejected sum, rejected count
        ref_chosen = reduce_logps(ref[:, 0], ref[:, 1], reduction)
        ref_rejected = reduce_logps(ref[:, 2], ref[:, 3], reduction)
    nll = chosen_nll(out, n, False)
    batch = PairLogps(logps[:n], logps[n:], ref_chosen, ref_rejected, nll,
                      chosen_nll(out, n, True) if on_prompt else None)
    numerators, metrics = method.loss(batch, **method.loss_kwargs(params))
    # method.sft_weight: + lambda * mean-token NLL of the chosen response (RPO-style).
    numerators = with_sft_weight(numerators, nll, params.get("sft_weight", 0.0))
    metrics["response_length"] = out.counts.float().mean().item()
    # Per example, so the loop's example-weighted mean is exact: x / B * B summed over micro-batches / N.
    metrics["computed_tokens_per_example"] = out.computed_tokens / n
    metrics["pad_tokens_per_example"] = out.pad_tokens / n
    if ref is not None:
        # k1 estimate of KL(pi || pi_ref) on the batch's (dataset) responses: mean of sum_t (log pi - log pi_ref).
        metrics["kl"] = (out.sums.detach() - torch.cat([ref[:, 0], ref[:, 2]]).to(out.sums.dtype)).mean()
    if with_entropy:
        metrics["entropy"] = out.entropy()
    return numerators, metrics, out.tokens


def kto_sequence_logps(model, prompts: list[list[int]], completions: list[list[int]], pad_id: int,
                       device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed completion log-probs of ``prompt + completion`` rows.

    Returns (sums [B], counts [B], logits [B, T, V], target mask [B, T - 1]).
    """
    rows = [p + c for p, c in zip(prompts, completions)]
    masks = [[0] * len(p) + [1] * len(c) for p, c in zip(prompts, completions)]
    ids = right_pad(rows, pad_id).to(device)
    attention = right_pad([[1] * len(r) for r in rows], 0).to(device)
    logits = model(input_ids=ids, attention_mask=attention).logits
    mask = target_mask(right_pad(masks, 0).to(device))
    return sequence_logps(token_logps(logits, ids), mask, "sum"), mask.sum(-1), logits, mask


@torch.no_grad()
def kl_pair_logps(model, examples: list, pairs: list[tuple[int, int]], pad_id: int, device,
                  batch_size: int = 16) -> torch.Tensor:
    """[M, 2] (summed log-prob, token count) of prompt i followed by completion j, per (i, j) in ``pairs``."""
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        sums, counts, *_ = kto_sequence_logps(model, [examples[i].prompt_ids for i, _ in chunk],
                                             [examples[j].completion_ids for _, j in chunk], pad_id, device)
        out.append(torch.stack([sums.double(), counts.double()], dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 2, dtype=torch.float64)


def kto_step_inputs(model, method: MethodEntry, params: dict, data: ExampleSet, step: list[int],
                    state: StepState, device) -> StepInputs:
    """The step's KTO z0, from the policy before this step's update and the plan's cached reference pairs."""
    pairs = step_kl_pairs(step)
    policy = kl_pair_logps(model, data.examples, pairs, data.pad_id, device)
    ref = torch.tensor([data.kl_ref[p] for p in pairs], dtype=torch.float64).reshape(-1, 2)
    reduction = method.reduction(params)
    kl = kto_kl_estimate(reduce_logps(policy[:, 0], policy[:, 1], reduction),
                         reduce_logps(ref[:, 0], ref[:, 1], reduction), state.kl_history)
    state.kl_history.append(kl)
    return StepInputs(kl=kl)


def forward_kto(model, method: MethodEntry, params: dict, examples: list, inputs: BatchInputs, pad_id: int,
                device, with_entropy: bool = False):
    """One KTO micro-batch: (per-example loss numerators [B], detached metrics, input tokens)."""
    sums, counts, logits, mask = kto_sequence_logps(model, [e.prompt_ids for e in examples],
                                                    [e.completion_ids for e in examples], pad_id, device)
    reduction = method.reduction(params)
    ref = inputs.ref.to(device)  # [B, 2]: the own completion's reference sum and count
    desirable = torch.tensor([bool(e.label) for e in examples], device=device)
    batch = KtoLogps(reduce_logps(sums, counts, reduction), reduce_logps(ref[:, 0], ref[:, 1], reduction),
                     desirable, inputs.kl)
    numerators, metrics = method.loss(batch, **method.loss_kwargs(params))
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
def reference_stats(model, examples: list, pad_id: int, device, batch_size: int = 16,
                    layout: str = "auto") -> torch.Tensor:
    """Per-pair reference statistics [N, 4]: chosen sum, chosen count, rejected sum, rejected count.

    Sums and counts (not reduced values) so one cache entry serves both
    ``sum`` and ``mean`` reductions.  ``layout``: ``train.pair_forward``.
    """
    rows = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        out = pair_logps(model, chunk, pad_id, device, layout)
        sums, counts = out.sums, out.counts
        n = len(chunk)
        rows.append(torch.stack([sums[:n], counts[:n].float(), sums[n:], counts[n:].float()], dim=1).float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0, 4)
