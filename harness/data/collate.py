"""Batch encoded examples into padded tensors.

Training batches are right-padded to the longest sequence in the batch.
``loss_mask`` marks the *target* tokens themselves (1 on each response token,
including its end-of-turn/EOS); the loss module shifts logits by one, so a
position's mask says whether the token at that position is predicted and
counted.  Generation batches are left-padded so every prompt ends at the last
column.
"""

from __future__ import annotations

import torch

from harness.data.tokenization import Encoded, EncodedPair


def right_pad(rows: list[list[int]], pad_value: int) -> torch.Tensor:
    """``[B, T]`` long tensor of ``rows`` right-padded with ``pad_value``; T = longest row."""
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), pad_value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _sequence_and_mask(
    prompt: list[int], response: list[int], train_on_prompt: bool, response_mask: list[int] | None = None
) -> tuple[list, list]:
    """The token sequence and its per-token loss mask (1 = counted target).

    ``response_mask`` (None = all ones) marks which response tokens are targets.
    With ``train_on_prompt`` every token but the first counts: the first token
    has no preceding position to predict it from.
    """
    if train_on_prompt:
        mask = [0] + [1] * (len(prompt) + len(response) - 1)
    else:
        mask = [0] * len(prompt) + (list(response_mask) if response_mask is not None else [1] * len(response))
    return prompt + response, mask


def _batch(sequences: list[tuple[list, list]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad (sequence, loss mask) pairs into input_ids, attention_mask, loss_mask, each ``[N, T]``."""
    ids = [s for s, _ in sequences]
    return {
        "input_ids": right_pad(ids, pad_id),
        "attention_mask": right_pad([[1] * len(s) for s in ids], 0),
        "loss_mask": right_pad([m for _, m in sequences], 0),
    }


def collate_sft(
    examples: list[Encoded], pad_id: int, train_on_prompt: bool = False
) -> dict[str, torch.Tensor]:
    """SFT batch: ``input_ids``, ``attention_mask``, ``loss_mask``, each ``[B, T]`` long.

    T is the longest ``prompt + response`` in the batch; padding has attention 0
    and loss 0.  An example's ``response_mask`` (multi-turn conversations) sets
    which response tokens count.
    """
    return _batch(
        [_sequence_and_mask(e.prompt_ids, e.response_ids, train_on_prompt, e.response_mask) for e in examples],
        pad_id,
    )


def collate_pairs(
    pairs: list[EncodedPair], pad_id: int, train_on_prompt: bool = False
) -> dict[str, torch.Tensor]:
    """Preference batch as one concatenated ``[2B, T]`` batch (one forward pass for both).

    Rows ``0..B-1`` are ``prompt + chosen`` and rows ``B..2B-1`` are
    ``prompt + rejected``, in the same pair order; T is the longest of all 2B.
    Keys: ``input_ids``, ``attention_mask``, ``loss_mask`` (long).
    """
    chosen = [_sequence_and_mask(p.prompt_ids, p.chosen_ids, train_on_prompt) for p in pairs]
    rejected = [_sequence_and_mask(p.prompt_ids, p.rejected_ids, train_on_prompt) for p in pairs]
    return _batch(chosen + rejected, pad_id)


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask``, each ``[B, T]`` long, for generation."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids, mask
