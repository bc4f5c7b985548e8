"""``train.packing``: several SFT examples per row, attention blocked at example boundaries.

A micro-batch is packed first-fit-decreasing into rows of at most
``train.max_length`` tokens; position ids restart at 0 for each example.
Restarting position ids alone does not isolate the examples under
transformers 5 with eager or sdpa attention: its packed-sequence detection
only runs when no attention mask and no KV cache are given, and Llama-style
models create a cache by default (``use_cache``), so the examples would attend
to each other (measured: logits differ by ~0.2 on a random Llama).  So the
forward pass gets an explicit 4D block-diagonal causal mask, which both
implementations take as-is (bool for sdpa; additive 0 / -inf for eager,
which would otherwise add a bool mask to its scores).

The logits are then scattered back to the unpacked ``[B, T, V]`` layout of
``collate_sft``, so every loss, mask and metric downstream is unchanged and a
packed step computes exactly what the unpacked step does; ``batch_size``
still counts examples.  Packing saves the padding of the model's forward pass.

``train.pair_forward: shared_prompt`` uses the same machinery for preference
pairs (``pack_pairs``): each pair is one segment ``[prompt, chosen, rejected]``
whose rejected tokens attend to the prompt and to themselves but not to the
chosen response, with position ids that continue from the prompt's end in both
responses; segments are packed first-fit-decreasing into rows as long as the
micro-batch's longest pair.  The prompt is computed once per pair instead of
twice, and the padding of the ``[2B, T]`` layout is gone.
"""

from __future__ import annotations

import functools
import inspect

import torch

from harness.errors import HarnessError

SUPPORTED = ("sdpa", "eager")


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: example indices per row, each row's total length <= capacity.

    Ties keep the original order, so packing is deterministic.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if lengths[i] > capacity:
            raise ValueError(f"example of {lengths[i]} tokens exceeds the packing capacity {capacity}")
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([])
            room.append(capacity)
            slot = len(rows) - 1
        rows[slot].append(i)
        room[slot] -= lengths[i]
    return rows


def pack(input_ids: torch.Tensor, lengths: list[int], capacity: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Pack the rows of a right-padded ``[B, T]`` batch into ``[R, C]`` rows.

    Returns ``input_ids`` and ``position_ids`` ``[R, C]``, ``segments`` ``[R, C]``
    (example number within its row, -1 on padding) and ``source`` ``[B, T, 2]``:
    the (row, column) of each unpacked position (padding points at (0, 0)).
    """
    layout = pack_rows(lengths, capacity)
    width = max(sum(lengths[i] for i in row) for row in layout)
    ids = torch.full((len(layout), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(layout), width), dtype=torch.long)
    segments = torch.full((len(layout), width), -1, dtype=torch.long)
    source = torch.zeros((*input_ids.shape, 2), dtype=torch.long)
    for r, row in enumerate(layout):
        offset = 0
        for k, i in enumerate(row):
            n = lengths[i]
            ids[r, offset : offset + n] = input_ids[i, :n]
            positions[r, offset : offset + n] = torch.arange(n)
            segments[r, offset : offset + n] = k
            source[i, :n, 0] = r
            source[i, :n, 1] = torch.arange(offset, offset + n)
            offset += n
    return {"input_ids": ids, "position_ids": positions, "segments": segments, "source": source}


def block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """``[R, 1, C, C]`` bool: query q sees key k iff same example and k <= q.

    A padding position sees only itself, so no softmax row is empty.
    """
    width = segments.shape[1]
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool, device=segments.device))
    same = segments[:, :, None] == segments[:, None, :]
    real = (segments >= 0)[:, :, None]
    eye = torch.eye(width, dtype=torch.bool, device=segments.device)
    return ((same & real & causal) | eye)[:, None]


def attention_implementation(model) -> str:
    inner = getattr(model, "module", model)  # DDP wraps the model
    return getattr(inner.config, "_attn_implementation", None) or "eager"


def takes_logits_to_keep(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers' causal LMs: the LM head runs
    only at the given sequence positions), seen through DDP and peft wrappers."""
    inner = getattr(model, "module", model)  # DDP
    if hasattr(inner, "get_base_model"):  # peft passes the keyword through to its base model
        inner = inner.get_base_model()
    return _forward_takes(type(inner))


@functools.cache
def _forward_takes(cls) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def identity_source(shape: torch.Size, device=None) -> torch.Tensor:
    """``[B, T, 2]``: each position of a ``[B, T]`` batch at its own (row, column), the unpacked layout as
    a ``source`` map (``pack``, ``pack_pairs``)."""
    rows = torch.arange(shape[0], device=device)[:, None].expand(shape)
    cols = torch.arange(shape[1], device=device)[None, :].expand(shape)
    return torch.stack([rows, cols], dim=-1)


def kept_columns(source: torch.Tensor, wanted: torch.Tensor, width: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The columns of the model's rows whose logits some wanted target needs, and ``source`` renumbered to them.

    Args:
        source: ``[B, T, 2]`` the (row, column) in the model's ``[R, width]`` rows of each position of the
            unpacked batch; position t's logits predict token t + 1.
        wanted: ``[B, T - 1]`` the targets whose log-probs are needed (``target_mask`` of the loss mask).
        width: the model's row length.
    Returns:
        ``(keep, source)``: ``keep`` a sorted 1-D tensor of column indices for ``logits_to_keep`` (None when
        every column is needed), and ``source`` pointing into the ``[R, len(keep)]`` logits that keeps.
        A position no wanted target needs points at some kept column: its values are not its own.
    """
    needed = source[:, :-1, 1][wanted.bool()]
    keep = torch.unique(needed) if needed.numel() else needed.new_zeros(1)
    if keep.numel() == width:
        return None, source
    renumber = torch.zeros(width, dtype=torch.long, device=source.device)
    renumber[keep] = torch.arange(keep.numel(), device=source.device)
    return keep, torch.stack([source[..., 0], renumber[source[..., 1]]], dim=-1)


def mask_for(model, allowed: torch.Tensor, dtype: torch.dtype, key: str = "train.packing",
             off: str = "false") -> torch.Tensor:
    """The 4D mask in the form the model's attention takes: bool (sdpa) or additive (eager).

    ``key: off`` is the setting an error message names to avoid the 4D mask.
    """
    implementation = attention_implementation(model)
    if implementation not in SUPPORTED:
        raise HarnessError(f"{key}: checked for {' and '.join(SUPPORTED)} attention only; "
                           f"this model uses {implementation!r} (set {key}: {off})")
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def packed_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, capacity: int, pad_id: int):
    """Logits ``[B, T, V]`` of a right-padded batch, computed on packed rows.

    Equal (up to float rounding) to ``model(input_ids, attention_mask).logits``
    at every non-padding position; padding positions hold some other position's logits.
    """
    lengths = attention_mask.sum(-1).tolist()
    packed = pack(input_ids.cpu(), lengths, capacity, pad_id)
    device = input_ids.device
    dtype = next(model.parameters()).dtype
    mask = mask_for(model, block_causal_mask(packed["segments"]).to(device), dtype)
    logits = model(input_ids=packed["input_ids"].to(device), position_ids=packed["position_ids"].to(device),
                   attention_mask=mask, use_cache=False).logits
    source = packed["source"].to(device)
    return logits[source[..., 0], source[..., 1]]


def pack_pairs(pairs: list, pad_id: int) -> dict[str, torch.Tensor]:
    """Shared-prompt rows of a pair batch: one segment ``prompt + chosen + rejected`` per pair.

    Returns ``input_ids``, ``position_ids``, ``segments`` (pair number within its row, -1 on padding)
    and ``parts`` (0 prompt, 1 chosen, 2 rejected, -1 padding), each ``[R, W]`` with W the longest
    pair, and ``source`` ``[2B, T, 2]``: the packed (row, column) of each position of the
    ``collate_pairs`` layout (rows 0..B-1 prompt + chosen, B..2B-1 prompt + rejected; padding -> (0, 0)).
    """
    segments_of = [p.prompt_ids + p.chosen_ids + p.rejected_ids for p in pairs]
    layout = pack_rows([len(s) for s in segments_of], max((len(s) for s in segments_of), default=1))
    width = max(sum(len(segments_of[i]) for i in row) for row in layout) if layout else 0
    plain = max((len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs), default=0)
    ids = torch.full((len(layout), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(layout), width), dtype=torch.long)
    segments = torch.full((len(layout), width), -1, dtype=torch.long)
    parts = torch.full((len(layout), width), -1, dtype=torch.long)
    source = torch.zeros((2 * len(pairs), plain, 2), dtype=torch.long)
    for r, row in enumerate(layout):
        offset = 0
        for k, i in enumerate(row):
            n_p, n_c, n_r = (len(x) for x in (pairs[i].prompt_ids, pairs[i].chosen_ids, pairs[i].rejected_ids))
            end = offset + n_p + n_c + n_r
            ids[r, offset:end] = torch.tensor(segments_of[i], dtype=torch.long)
            # Both responses continue from the prompt's end: rejected restarts at n_p.
            positions[r, offset:end] = torch.cat([torch.arange(n_p + n_c), torch.arange(n_p, n_p + n_r)])
            segments[r, offset:end] = k
            parts[r, offset:end] = torch.tensor([0] * n_p + [1] * n_c + [2] * n_r)
            source[i, : n_p + n_c, 0] = source[len(pairs) + i, : n_p + n_r, 0] = r
            source[i, : n_p + n_c, 1] = torch.arange(offset, offset + n_p + n_c)
            source[len(pairs) + i, : n_p + n_r, 1] = torch.cat([torch.arange(offset, offset + n_p),
                                                               torch.arange(offset + n_p + n_c, end)])
            offset = end
    return {"input_ids": ids, "position_ids": positions, "segments": segments, "parts": parts, "source": source}


def shared_prompt_mask(segments: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """``[R, 1, W, W]`` bool: ``block_causal_mask``, less rejected queries seeing chosen keys."""
    crossing = (parts == 2)[:, :, None] & (parts == 1)[:, None, :]
    return block_causal_mask(segments) & ~crossing[:, None]
