"""Tokenize rows into prompt and response ids, by TRL's rule (DESIGN.md), then truncate.

The rule, so that the same file gives the same tokens in harness and TRL 1.16:

- message lists: ``prompt = apply_chat_template(prompt, add_generation_prompt=True)``,
  ``full = apply_chat_template(prompt + response)``; the template's end-of-turn
  tokens belong to the response and no extra EOS is added;
- plain strings: ``prompt = tokenizer(prompt)`` with the default special tokens
  (e.g. BOS), ``full = tokenizer(prompt + response + eos)`` with EOS appended
  only when the response does not already end with it;
- the response is ``full[k:]`` where ``k`` is the length of the longest common
  prefix of ``prompt`` and ``full``.  ``k < len(prompt)`` (tokens merging across
  the boundary, or a template that renders the prompt differently) is counted
  as a prefix mismatch;
- pairs share one prompt: ``k = min(k_chosen, k_rejected)``, as TRL's DPO does;
- several assistant turns (``assistant_turns: all``): the prompt is everything
  before the first assistant turn, the response everything after, and a
  per-token ``response_mask`` marks each assistant turn's tokens (with its
  end-of-turn), found by tokenizing the conversation's prefixes
  (``assistant_spans``); the tokens of later user turns are context only;
- ``{"text"}`` rows: ``tokenizer(text + eos)`` (EOS appended only when missing,
  as TRL's SFT); the first token is the "prompt", so every other token is a target.

Truncation (``data.truncation``) applies only to sequences longer than
``max_length``: ``keep_end_of_prompt`` drops the prompt's start down to
``max_prompt_length`` and then cuts the response's end to fit; ``drop`` drops
the example; ``error`` raises a DataError naming its ``source:line``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.data.load import Row, check_weights
from harness.errors import DataError, SpecError

TRUNCATIONS = ("keep_end_of_prompt", "drop", "error")


@dataclass
class Encoded:
    """One SFT example: the model sees ``prompt_ids + response_ids`` and learns the response.

    ``response_mask`` (same length as ``response_ids``, 1 = target) is set only
    when some response tokens are context, e.g. the user turns between the
    assistant turns of a conversation; None means every response token is a
    target.  ``weight`` is the IW-SFT weight from the data (None otherwise).
    """

    prompt_ids: list[int]
    response_ids: list[int]
    source: str = ""
    line: int = 0
    response_mask: list[int] | None = None
    weight: float | None = None

    @property
    def target_mask(self) -> list[int]:
        """1 for each response token that is a target."""
        return self.response_mask if self.response_mask is not None else [1] * len(self.response_ids)


@dataclass
class EncodedKTO:
    """One KTO example: ``prompt_ids + completion_ids``, desirable when ``label`` is True."""

    prompt_ids: list[int]
    completion_ids: list[int]
    label: bool
    source: str = ""
    line: int = 0


@dataclass
class EncodedPair:
    """One preference pair; chosen and rejected both follow the same ``prompt_ids``."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    source: str = ""
    line: int = 0


@dataclass
class TokenStats:
    """What tokenization did to a dataset, for logging."""

    rows: int = 0
    prefix_mismatch: int = 0
    truncated: int = 0
    dropped: int = 0

    def as_metrics(self) -> dict[str, int]:
        """``{"data/rows": n, "data/prefix_mismatch": n, "data/truncated": n, "data/dropped": n}``."""
        return {f"data/{k}": v for k, v in vars(self).items()}


# ------------------------------------------------------------------ primitives


def _ids(encoding) -> list[int]:
    """Plain ``list[int]`` from a BatchEncoding/dict (transformers 5 default) or a list."""
    ids = encoding["input_ids"] if not isinstance(encoding, list) else encoding
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):  # a batch of one
        ids = ids[0]
    return [int(i) for i in ids]


def chat_ids(tokenizer, messages: list[dict], *, add_generation_prompt: bool) -> list[int]:
    """Token ids of ``messages`` rendered by the tokenizer's chat template.

    Same call as TRL's ``_tokenize``: ``apply_chat_template(tokenize=True,
    return_dict=True)``, which adds no special tokens beyond the template's own.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"the model's tokenizer ({tokenizer.name_or_path}) has no chat template, but the data has message "
            "lists; use plain-string prompt/completion data or a model with a chat template")
    encoding = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return _ids(encoding)


def text_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with the tokenizer's default special tokens (e.g. BOS)."""
    return _ids(tokenizer(text=text))


def common_prefix_length(ids: list[int], other: list[int]) -> int:
    """Number of leading tokens that ``ids`` and ``other`` share."""
    n = 0
    for a, b in zip(ids, other):
        if a != b:
            break
        n += 1
    return n


def with_eos(tokenizer, text: str) -> str:
    """``text`` ending with the EOS token string, appended only if not already there."""
    eos = tokenizer.eos_token
    if eos is None:
        raise DataError("tokenizer has no eos_token; plain-string data needs one to end responses")
    return text if text.endswith(eos) else text + eos


def _prompt_and_fulls(tokenizer, prompt, responses: list) -> tuple[list[int], list[list[int]]]:
    """Prompt ids and one full (prompt + response) id sequence per response, by the TRL rule."""
    if isinstance(prompt, str):
        prompt_ids = text_ids(tokenizer, prompt)
        fulls = [text_ids(tokenizer, prompt + with_eos(tokenizer, r)) for r in responses]
    else:
        prompt_ids = chat_ids(tokenizer, prompt, add_generation_prompt=True)
        fulls = [chat_ids(tokenizer, prompt + r, add_generation_prompt=False) for r in responses]
    return prompt_ids, fulls


def split_prompt_response(tokenizer, prompt, responses: list) -> tuple[list[int], list[list[int]], bool]:
    """Tokenize a prompt with one or more responses that share it.

    ``prompt`` is a string or a message list; each response has the same type.
    Returns ``(prompt_ids[:k], [full[k:] for each full], mismatch)`` where ``k``
    is the shortest common prefix of the prompt's ids with every full sequence.
    """
    prompt_ids, fulls = _prompt_and_fulls(tokenizer, prompt, responses)
    k = min(common_prefix_length(prompt_ids, full) for full in fulls)
    return prompt_ids[:k], [full[k:] for full in fulls], k < len(prompt_ids)


def sft_prompt_response(data: dict) -> tuple[object, object]:
    """The (prompt, response) of a ``prompt``/``completion`` row, or of a conversation's last turn.

    For ``{"messages"}`` the prompt is every message before the last assistant
    turn and the response is that last turn only (``assistant_turns: last``).
    """
    if data.get("messages") is not None:
        messages = data["messages"]
        return messages[:-1], messages[-1:]
    return data["prompt"], data["completion"]


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[list[int], list[tuple[int, int]], bool]:
    """The conversation's ids and the ``[start, end)`` token span of each assistant turn.

    By incremental prefix tokenization, TRL's rule applied turn by turn: turn i
    starts after ``template(messages[:i], add_generation_prompt=True)`` and ends
    after ``template(messages[:i + 1])``, so its end-of-turn tokens are in the
    span.  Both are measured as common prefixes with the full sequence; the
    third value is True when one of them was not a token prefix of it.
    """
    full = chat_ids(tokenizer, messages, add_generation_prompt=False)
    spans, mismatch = [], False
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = chat_ids(tokenizer, messages[:i], add_generation_prompt=True)
        through = full if i == len(messages) - 1 else chat_ids(tokenizer, messages[: i + 1], add_generation_prompt=False)
        start, end = common_prefix_length(before, full), common_prefix_length(through, full)
        mismatch |= start < len(before) or end < len(through)
        spans.append((start, end))
    return full, spans, mismatch


def conversation_prompt_response(tokenizer, messages: list[dict]):
    """``(prompt_ids, response_ids, response_mask, mismatch)`` training every assistant turn.

    The prompt ends where the first assistant turn starts; ``response_mask`` is
    1 on assistant-turn tokens, 0 on the turns between them, and None when
    every response token is a target (a single assistant turn).
    """
    full, spans, mismatch = assistant_spans(tokenizer, messages)
    k = spans[0][0]
    mask = [0] * (len(full) - k)
    for start, end in spans:
        for j in range(max(start, k), end):
            mask[j - k] = 1
    return full[:k], full[k:], (None if all(mask) else mask), mismatch


def text_prompt_response(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """A ``{"text"}`` row: ``tokenizer(text + eos)``; the first token is the prompt, the rest targets.

    Continued pretraining trains on every token that has a predecessor, as
    TRL's SFT does on its ``text`` field (it also appends a missing EOS).
    """
    ids = text_ids(tokenizer, with_eos(tokenizer, text))
    return ids[:1], ids[1:]


def _sft_ids(tokenizer, data: dict, assistant_turns: str):
    """``(prompt_ids, response_ids, response_mask | None, mismatch)`` of one SFT row."""
    if data.get("messages") is not None and assistant_turns == "all":
        return conversation_prompt_response(tokenizer, data["messages"])
    if data.get("messages") is None and data.get("text") is not None and data.get("prompt") is None:
        return (*text_prompt_response(tokenizer, data["text"]), None, False)
    prompt, response = sft_prompt_response(data)
    prompt_ids, (response_ids,), mismatch = split_prompt_response(tokenizer, prompt, [response])
    return prompt_ids, response_ids, None, mismatch


# ------------------------------------------------------------------ truncation


def resolve_max_prompt_length(max_length: int, max_prompt_length: int | None) -> int:
    """``max_prompt_length``, defaulting to half of ``max_length``; must leave room for a response."""
    if max_prompt_length is None:
        max_prompt_length = max_length // 2
    if not 0 < max_prompt_length < max_length:
        raise SpecError(
            f"data.max_prompt_length: must be in [1, train.max_length - 1] = [1, {max_length - 1}], "
            f"got {max_prompt_length}"
        )
    return max_prompt_length


def truncate(
    prompt: list[int], responses: list[list[int]], max_length: int, max_prompt_length: int
) -> tuple[list[int], list[list[int]]]:
    """keep_end_of_prompt: keep the prompt's last ``max_prompt_length`` tokens, then cut each
    response's end so that ``len(prompt) + len(response) <= max_length``.

    Only called when some ``prompt + response`` is longer than ``max_length``.
    """
    prompt = prompt[-max_prompt_length:] if len(prompt) > max_prompt_length else prompt
    room = max_length - len(prompt)
    return prompt, [r[:room] for r in responses]


def _fit(prompt, responses, row: Row, limits: tuple[int, int], truncation: str, stats: TokenStats):
    """Apply ``truncation`` to one example; returns ``(prompt, responses)`` or None if dropped."""
    if any(not r for r in responses):  # nothing to learn from; counted, never silent
        stats.dropped += 1
        return None
    max_length, max_prompt_length = limits
    longest = len(prompt) + max(len(r) for r in responses)
    if longest <= max_length:
        return prompt, responses
    if truncation == "error":
        raise DataError(
            f"{row.where}: {longest} tokens exceed train.max_length={max_length} (data.truncation: error)"
        )
    if truncation == "drop":
        stats.dropped += 1
        return None
    stats.truncated += 1
    return truncate(prompt, responses, max_length, max_prompt_length)


def _limits(max_length: int, max_prompt_length: int | None, truncation: str) -> tuple[int, int]:
    if truncation not in TRUNCATIONS:
        raise SpecError(f"data.truncation: must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")
    return max_length, resolve_max_prompt_length(max_length, max_prompt_length)


# ------------------------------------------------------------------ public API


def _row_weight(row: Row, weight_field: str | None) -> float | None:
    return None if weight_field is None else float(row.data[weight_field])


def _fit_mask(mask: list[int] | None, response: list[int]) -> list[int] | None:
    """The response mask cut like its response (truncation only removes the end)."""
    return None if mask is None else mask[: len(response)]


def encode_sft(
    tokenizer,
    rows: list[Row],
    max_length: int,
    max_prompt_length: int | None = None,
    truncation: str = "keep_end_of_prompt",
    assistant_turns: str = "all",
    weight_field: str | None = None,
) -> tuple[list[Encoded], TokenStats]:
    """Tokenize SFT rows (``messages``, ``prompt``/``completion`` or ``text``) and truncate them.

    ``assistant_turns`` ("all" | "last") picks the targets of a conversation;
    ``weight_field``, when given, is read into ``Encoded.weight`` (every row
    must carry a finite number > 0 there).  Returns the kept examples (each
    ``len(prompt_ids) + len(response_ids) <= max_length``) and the counts of
    rows, prefix mismatches, truncations and drops.
    """
    limits = _limits(max_length, max_prompt_length, truncation)
    if weight_field is not None:
        check_weights(rows, weight_field)
    stats, out = TokenStats(rows=len(rows)), []
    for row in rows:
        prompt_ids, response_ids, mask, mismatch = _sft_ids(tokenizer, row.data, assistant_turns)
        stats.prefix_mismatch += mismatch
        fitted = _fit(prompt_ids, [response_ids], row, limits, truncation, stats)
        if fitted is None:
            continue
        # The response starts with the first assistant turn, so a cut mask still has a target.
        prompt_ids, (response_ids,) = fitted
        mask = _fit_mask(mask, response_ids)
        out.append(Encoded(prompt_ids, response_ids, row.source, row.line, mask, _row_weight(row, weight_field)))
    return out, stats


def encode_kto(
    tokenizer,
    rows: list[Row],
    max_length: int,
    max_prompt_length: int | None = None,
    truncation: str = "keep_end_of_prompt",
) -> tuple[list[EncodedKTO], TokenStats]:
    """Tokenize KTO rows (``prompt``/``completion``/``label``; see ``harness.data.load.pairs_to_kto``).

    Same rule and truncation as one SFT prompt/completion example.
    """
    limits = _limits(max_length, max_prompt_length, truncation)
    stats, out = TokenStats(rows=len(rows)), []
    for row in rows:
        data = row.data
        prompt_ids, (completion_ids,), mismatch = split_prompt_response(tokenizer, data["prompt"], [data["completion"]])
        stats.prefix_mismatch += mismatch
        fitted = _fit(prompt_ids, [completion_ids], row, limits, truncation, stats)
        if fitted is not None:
            out.append(EncodedKTO(fitted[0], fitted[1][0], bool(data["label"]), row.source, row.line))
    return out, stats


def encode_pairs(
    tokenizer,
    rows: list[Row],
    max_length: int,
    max_prompt_length: int | None = None,
    truncation: str = "keep_end_of_prompt",
) -> tuple[list[EncodedPair], TokenStats]:
    """Tokenize preference rows (``prompt``/``chosen``/``rejected``) and truncate each pair jointly.

    Chosen and rejected share one prompt-id sequence; the prompt is cut once for
    both and each response is cut on its own.
    """
    limits = _limits(max_length, max_prompt_length, truncation)
    stats, out = TokenStats(rows=len(rows)), []
    for row in rows:
        data = row.data
        prompt_ids, responses, mismatch = split_prompt_response(
            tokenizer, data["prompt"], [data["chosen"], data["rejected"]]
        )
        stats.prefix_mismatch += mismatch
        fitted = _fit(prompt_ids, responses, row, limits, truncation, stats)
        if fitted is not None:
            prompt_ids, (chosen, rejected) = fitted
            out.append(EncodedPair(prompt_ids, chosen, rejected, row.source, row.line))
    return out, stats


def encode_prompt(tokenizer, prompt, system_prompt: str | None = None) -> list[int]:
    """Prompt ids for generation.

    A message list is rendered by the chat template with the generation prompt,
    after a ``{"role": "system"}`` turn when ``system_prompt`` is given; a string
    is tokenized with the default special tokens.  A system prompt needs a
    message-list prompt, and must not clash with one the prompt already has.
    """
    if isinstance(prompt, str):
        if system_prompt is not None:
            raise DataError("system_prompt needs message-list prompts; this prompt is a plain string")
        return text_ids(tokenizer, prompt)
    if system_prompt is not None:
        if prompt and prompt[0].get("role") == "system":
            raise DataError("system_prompt is set but the prompt already starts with a system message")
        prompt = [{"role": "system", "content": system_prompt}, *prompt]
    return chat_ids(tokenizer, prompt, add_generation_prompt=True)
