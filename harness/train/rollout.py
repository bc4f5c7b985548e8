"""Rollouts for the online loop: prompts -> sampled completions -> per-token log-probs of them.

Prompts are rendered with the trial's own chat template
(``harness.data.tokenization.encode_prompt``), exactly as evaluation renders
them, and sampled through the generation backend interface
(``harness.eval.backends``).  A batch of samples is laid out with the prompts
left-padded and the completions right-padded, so completion token j of every
row sits in the same column; explicit position ids make each row's positions
start at 0 at its first real token, as ``generate`` numbers them, so the
log-probs the loop trains on are those of the distribution it sampled from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.data.load import Row
from harness.data.tokenization import (
    encode_prompt,
    resolve_max_prompt_length,
    sft_prompt_response,
    split_prompt_response,
)
from harness.errors import DataError
from harness.methods import token_logps


@dataclass
class Prompts:
    """A stage's prompt rows, encoded: ``ids[i]`` renders ``rows[i]`` (truncated as ``data.truncation`` says);
    ``responses[i]`` the row's own response ids, for methods that read SFT rows (SPIN), else None."""

    rows: list[Row]
    ids: list[list[int]]
    stats: dict
    responses: list[list[int]] | None = None


def _prompt_and_response(tokenizer, row: Row, with_response: bool) -> tuple[list[int], list[int] | None, bool]:
    """(prompt ids, the row's response ids or None, whether the template's prompt is not a prefix of the
    full render).  A response ends at its first EOS, as a sampled completion does: what a chat template
    puts after the end-of-turn token (ChatML's newline) is never sampled, so it is not compared or trained."""
    if not with_response:
        return encode_prompt(tokenizer, row.data["prompt"]), None, False
    prompt, response = sft_prompt_response(row.data)
    prompt_ids, (response_ids,), mismatch = split_prompt_response(tokenizer, prompt, [response])
    eos = tokenizer.eos_token_id
    if eos in response_ids:
        response_ids = response_ids[: response_ids.index(eos) + 1]
    return prompt_ids, response_ids, mismatch


def encode_prompts(tokenizer, rows: list[Row], max_length: int, max_prompt_length: int | None,
                   truncation: str, max_new_tokens: int, with_responses: bool = False) -> Prompts:
    """Prompt ids of every row; a prompt longer than its budget is cut at its start, dropped or an error.

    The budget is ``data.max_prompt_length`` (default half of ``train.max_length``), and no
    more than ``train.max_length - max_new_tokens``, so that prompt plus completion fit.
    ``with_responses``: rows are SFT rows, whose prompt is encoded and whose response is kept
    (cut to what fits after the prompt).  Dropped and truncated rows are counted
    (``data/dropped``, ``data/truncated``).
    """
    limit = min(resolve_max_prompt_length(max_length, max_prompt_length), max_length - max_new_tokens)
    if limit < 1:
        raise DataError(f"method.max_new_tokens ({max_new_tokens}) leaves no room for a prompt within "
                        f"train.max_length ({max_length})")
    kept, ids, responses, truncated, dropped, mismatched = [], [], [], 0, 0, 0
    for row in rows:
        prompt, response, mismatch = _prompt_and_response(tokenizer, row, with_responses)
        if not prompt:
            raise DataError(f"{row.where}: field 'prompt': renders to no tokens; a rollout needs a prompt")
        mismatched += mismatch
        cut = len(prompt) > limit or (response is not None and len(prompt) + len(response) > max_length)
        if cut:
            if truncation == "error":
                raise DataError(f"{row.where}: the prompt has {len(prompt)} tokens, more than the {limit} a "
                                f"rollout allows, or its response does not fit train.max_length "
                                f"({max_length}) (data.truncation: error)")
            if truncation == "drop":
                dropped += 1
                continue
            truncated += 1
            prompt = prompt[-limit:]
            response = None if response is None else response[: max_length - len(prompt)]
        kept.append(row)
        ids.append(prompt)
        responses.append(response)
    if not kept:
        raise DataError(f"{rows[0].source}: every prompt is longer than the {limit} tokens a rollout allows "
                        "(data.truncation: drop)")
    stats = {"data/prompts": len(kept), "data/truncated": truncated, "data/dropped": dropped}
    if with_responses:  # the chat template's generation prompt is not a prefix of prompt + response
        stats["data/prefix_mismatch"] = mismatched
    return Prompts(kept, ids, stats, responses if with_responses else None)


@dataclass
class Samples:
    """Every completion of one rollout, in prompt order (a prompt's samples are consecutive)."""

    prompt_index: list[int]  # index into the rollout's prompts, per sample
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]  # EOS included when one was generated
    texts: list[str]
    truncated: list[bool]  # ended without an EOS, cut by max_new_tokens

    def __len__(self) -> int:
        return len(self.completion_ids)


def with_data_responses(samples: Samples, responses: list[list[int]], tokenizer) -> Samples:
    """Each sample followed by its prompt's data response (SPIN's pairs: the policy's answer, the data's)."""
    out = Samples([], [], [], [], [])
    for i in range(len(samples)):
        response = responses[samples.prompt_index[i]]
        for c_ids, text, cut in ((samples.completion_ids[i], samples.texts[i], samples.truncated[i]),
                                 (response, tokenizer.decode(response, skip_special_tokens=True).strip(), False)):
            out.prompt_index.append(samples.prompt_index[i])
            out.prompt_ids.append(samples.prompt_ids[i])
            out.completion_ids.append(list(c_ids))
            out.texts.append(text)
            out.truncated.append(cut)
    return out


def sample(generator, prompts: list[list[int]], settings, progress: bool = False) -> Samples:
    """``settings.n`` completions of each prompt from a ``harness.eval.backends`` generator."""
    eos = generator.tokenizer.eos_token_id
    out = generator.generate(prompts, settings, progress=progress, desc="rollout")
    index, p_ids, c_ids, texts, truncated = [], [], [], [], []
    for i, (prompt, completions) in enumerate(zip(prompts, out)):
        for c in completions:
            index.append(i)
            p_ids.append(prompt)
            c_ids.append(list(c.token_ids))
            texts.append(c.text)
            truncated.append(eos not in c.token_ids)
    return Samples(index, p_ids, c_ids, texts, truncated)


@dataclass
class SequenceBatch:
    """Prompts left-padded to P columns, completions right-padded after them to L columns."""

    input_ids: torch.Tensor  # [B, P + L]
    attention_mask: torch.Tensor  # [B, P + L]
    position_ids: torch.Tensor  # [B, P + L]
    completion_mask: torch.Tensor  # [B, L], 1 on each completion token
    prompt_width: int  # P

    def to(self, device) -> SequenceBatch:
        return SequenceBatch(self.input_ids.to(device), self.attention_mask.to(device),
                             self.position_ids.to(device), self.completion_mask.to(device), self.prompt_width)


def sequence_batch(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int) -> SequenceBatch:
    """The padded layout of (prompt, completion) rows; completion token j of every row is at column P + j."""
    width_p = max(len(p) for p in prompt_ids)
    width_c = max(max((len(c) for c in completion_ids), default=0), 1)
    n = len(prompt_ids)
    ids = torch.full((n, width_p + width_c), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    mask = torch.zeros((n, width_c), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        ids[i, width_p - len(p): width_p] = torch.tensor(p, dtype=torch.long)
        ids[i, width_p: width_p + len(c)] = torch.tensor(c, dtype=torch.long)
        attention[i, width_p - len(p): width_p + len(c)] = 1
        mask[i, : len(c)] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return SequenceBatch(ids, attention, positions, mask, width_p)


def forward(model, batch: SequenceBatch, hidden_states: bool = False):
    """The model's output on the layout: logits [B, P + L, V], and every layer's hidden states when asked."""
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                 output_hidden_states=hidden_states)


def completion_columns(x: torch.Tensor, batch: SequenceBatch) -> torch.Tensor:
    """The L columns [B, L, ...] of a per-position x [B, P + L, ...] that predict completion tokens 0..L-1
    (columns P - 1 .. P + L - 2): where a value model reads V(s_t) of the state before token t."""
    start = batch.prompt_width - 1
    return x[:, start: start + batch.completion_mask.shape[1]]


def logps_of(output, batch: SequenceBatch, with_logits: bool = False, temperature: float = 1.0):
    """``completion_logps`` from a ``forward`` output already computed."""
    start = batch.prompt_width - 1
    logits = output.logits if temperature == 1.0 else output.logits / temperature
    logps = completion_columns(token_logps(logits, batch.input_ids), batch)
    logps = logps * batch.completion_mask.to(logps.dtype)
    return logps, (logits[:, start:] if with_logits else None)


def completion_logps(model, batch: SequenceBatch, with_logits: bool = False, temperature: float = 1.0):
    """Per-token log-probs of the completions [B, L] (0 off the mask), and, if asked, the logits
    [B, L + 1, V] from column P - 1 on (position j predicts completion token j; the last predicts
    nothing, the layout ``harness.methods.entropy_from_logits`` takes with the completion mask).

    Completion token j (column P + j) is predicted by the logits at column P + j - 1.  The logits are
    divided by the sampling ``temperature`` first, so the log-probs are those of the distribution the
    completions were sampled from (TRL's GRPOTrainer does the same for policy and reference).
    """
    return logps_of(forward(model, batch), batch, with_logits, temperature)
