"""Log-prob gathering: the one place where logits become per-token and per-sequence log-probs.

Shapes: B batch rows, T sequence length, V vocabulary.  Logits at position t
predict the token at t + 1, so every per-token quantity here has T - 1 columns:
column t is about token ``input_ids[:, t + 1]``.

Masks follow one convention.  A collator's ``loss_mask`` [B, T] marks the
target tokens themselves (response tokens, including their end-of-turn/EOS,
are 1; pad, prompt and system tokens are 0).  ``target_mask`` shifts it to the
[B, T - 1] mask of predicted positions that every loss takes.
"""

from __future__ import annotations

import torch

REDUCTIONS = ("sum", "mean")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # bf16/fp16 logits are reduced in float32; float64 stays float64 (gradcheck).
    return torch.promote_types(dtype, torch.float32)


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Log-prob of each next token: out[b, t] = log p(input_ids[b, t+1] | input_ids[b, :t+1]).

    Args:
        logits: [B, T, V], any float dtype.
        input_ids: [B, T] integer token ids.
    Returns:
        [B, T - 1] in float32 (float64 if the logits are float64).

    Computed as logit[y] - logsumexp(logits) one batch row at a time, so a
    float32 or float64 input needs no [B, T, V] copy at all (logsumexp's
    backward reuses the input), and a bf16 input needs at most one float32
    copy (kept for backward only when gradients are on).
    """
    if logits.dim() != 3 or input_ids.shape != logits.shape[:2]:
        raise ValueError(
            f"token_logps: expected logits [B, T, V] and input_ids [B, T], got "
            f"{tuple(logits.shape)} and {tuple(input_ids.shape)}"
        )
    dtype = _compute_dtype(logits.dtype)
    targets = input_ids[:, 1:].unsqueeze(-1)
    # Gathering from the low-precision logits is exact: bf16 -> float32 is lossless.
    target_logits = logits[:, :-1].gather(-1, targets).squeeze(-1).to(dtype)
    normalizers = torch.stack([torch.logsumexp(row[:-1].to(dtype), dim=-1) for row in logits])
    return target_logits - normalizers


def packed_token_logps(logits: torch.Tensor, source: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``token_logps`` of a batch whose logits were computed on packed rows.

    Args:
        logits: [R, W, V] logits of the packed rows.
        source: [B, T, 2] the packed (row, column) of each position of the unpacked batch.
        input_ids: [B, T] the unpacked batch.
    Returns:
        [B, T - 1]: out[b, t] = log p(input_ids[b, t+1]) from the logits at ``source[b, t]``,
        equal to ``token_logps`` of the unpacked logits (padding columns hold other values).

    Gathers only the target logit and the log-normalizer of each position, so no [B, T, V]
    copy is made; one packed position may predict several targets (a shared prompt's last).
    """
    dtype = _compute_dtype(logits.dtype)
    rows, cols = source[:, :-1, 0], source[:, :-1, 1]
    target_logits = logits[rows, cols, input_ids[:, 1:]].to(dtype)
    normalizers = torch.stack([torch.logsumexp(row.to(dtype), dim=-1) for row in logits])
    return target_logits - normalizers[rows, cols]


def off_target_probs(logits: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_{v != y} q_v and sum_{v != y} q_v^2 of each next-token distribution q = softmax(logits).

    Args:
        logits: [B, T, V]; input_ids: [B, T], the target y of column t is ``input_ids[:, t + 1]``.
    Returns:
        two [B, T - 1] tensors (float32, or float64 for float64 logits), differentiable.

    Each is a logsumexp over the vocabulary with y left out, minus logsumexp over all of it
    (for the squares: of 2 l, minus 2 logsumexp(l)).  Nothing is subtracted from a number
    near 1, so both stay accurate to the dtype's relative precision when p_y -> 1, where
    1 - p_y and sum_v q_v^2 - p_y^2 cancel (Brier-SFT).  One row at a time, so the only
    [T, V] copies are one row's.
    """
    dtype = _compute_dtype(logits.dtype)
    targets = input_ids[:, 1:].unsqueeze(-1)
    mass, squares = [], []
    for row, target in zip(logits, targets):
        row = row[:-1].to(dtype)
        lse = torch.logsumexp(row, dim=-1)
        others = row.scatter(-1, target, float("-inf"))  # log q without y, up to lse
        mass.append(torch.exp(torch.logsumexp(others, dim=-1) - lse))
        squares.append(torch.exp(torch.logsumexp(2 * others, dim=-1) - 2 * lse))
    return torch.stack(mass), torch.stack(squares)


def target_mask(loss_mask: torch.Tensor) -> torch.Tensor:
    """Mask of predicted target positions: [B, T] loss_mask -> [B, T - 1] (``loss_mask[:, 1:]``).

    Column t of ``token_logps`` scores token t + 1, so it counts iff token t + 1
    is a target.  The first token is never predicted and never counts.
    """
    return loss_mask[:, 1:]


def token_counts(mask: torch.Tensor) -> torch.Tensor:
    """Number of target tokens per row: [B, T - 1] mask (bool, int or float) -> [B] float32."""
    return mask.sum(-1).to(torch.float32)


def reduce_logps(sums: torch.Tensor, counts: torch.Tensor, reduction: str) -> torch.Tensor:
    """Sequence log-probs from per-row sums and token counts: [B], [B] -> [B].

    ``"sum"`` returns the sums; ``"mean"`` divides by the count (a row with no
    target tokens gives 0, not NaN).  The reference cache stores sums and
    counts, so both reductions come from one entry through this function.
    """
    if reduction == "sum":
        return sums
    if reduction == "mean":
        return sums / counts.to(sums.dtype).clamp(min=1)
    raise ValueError(f"logprob reduction must be one of {REDUCTIONS}, got {reduction!r}")


def sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Per-sequence log-prob of the masked tokens: [B, T - 1], [B, T - 1] -> [B].

    ``reduction="sum"`` gives log p(response | prompt); ``"mean"`` gives the
    mean token log-prob (the length-normalized form used by IPO, SimPO, ORPO).
    """
    mask = mask.to(token_logps.dtype)
    return reduce_logps((token_logps * mask).sum(-1), mask.sum(-1), reduction)


def token_entropies(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's next-token distribution, with gradient: [B, T, V] -> [B, T].

    H_t = logsumexp(l_t) - sum_v softmax(l_t)_v l_t,v, in float32 or wider (for an entropy bonus;
    ``entropy_from_logits`` is the detached, memory-light metric).
    """
    logits = logits.to(_compute_dtype(logits.dtype))
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(-1)


@torch.no_grad()
def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the next-token distribution over target positions (a detached metric).

    Args:
        logits: [B, T, V]; position t's distribution predicts token t + 1.
        mask: [B, T - 1] target mask (as from ``target_mask``).
    Returns:
        0-dim float32 tensor: sum over masked positions of H_t / number of masked
        positions, with H_t = logsumexp(l_t) - sum_v softmax(l_t)_v l_t,v (0 if none).
    """
    dtype = _compute_dtype(logits.dtype)
    total = torch.zeros((), dtype=dtype, device=logits.device)
    for row, row_mask in zip(logits, mask):
        row = row[:-1].to(dtype)  # one row's float copy at a time
        lse = torch.logsumexp(row, dim=-1)
        entropy = lse - (torch.softmax(row, dim=-1) * row).sum(-1)
        total += (entropy * row_mask.to(dtype)).sum()
    count = mask.to(dtype).sum().clamp(min=1)
    return (total / count).to(torch.float32)


@torch.no_grad()
def packed_entropy(logits: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``entropy_from_logits`` of a batch whose logits [R, W, V] were computed on packed rows.

    ``source`` [B, T, 2] maps unpacked positions to packed ones, ``mask`` [B, T - 1] is the
    unpacked target mask; a packed position counts once per unpacked target it predicts.
    """
    dtype = _compute_dtype(logits.dtype)
    entropies = torch.stack([torch.logsumexp(row.to(dtype), dim=-1)
                             - (torch.softmax(row.to(dtype), dim=-1) * row.to(dtype)).sum(-1) for row in logits])
    per_target = entropies[source[:, :-1, 0], source[:, :-1, 1]]
    weights = mask.to(dtype)
    return ((per_target * weights).sum() / weights.sum().clamp(min=1)).to(torch.float32)
