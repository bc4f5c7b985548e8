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
- pairs share one prompt: ``k = min(k_chosen, k_rejected)``, as TRL's DPO does.

Truncation (``data.truncation``) applies only to sequences longer than
``max_length``: ``keep_end_of_prompt`` drops the prompt's start down to
``max_prompt_length`` and then cuts the response's end to fit; ``drop`` drops
the example; ``error`` raises a DataError naming its ``source:line``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.data import Row
from harness.errors import DataError, SpecError

TRUNCATIONS = ("keep_end_of_prompt", "drop", "error")


@dataclass
class Encoded:
    """One SFT example: the model sees ``prompt_ids + response_ids`` and learns the response."""

    prompt_ids: list[int]
    response_ids: list[int]
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
    """The (prompt, response) of an SFT row.

    For ``{"messages"}`` the prompt is every message before the last assistant
    turn and the response is that last turn only.  (Training on every assistant
    turn, ``method.assistant_turns: all``, is a later addition.)
    """
    if data.get("messages") is not None:
        messages = data["messages"]
        return messages[:-1], messages[-1:]
    return data["prompt"], data["completion"]


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


def encode_sft(
    tokenizer,
    rows: list[Row],
    max_length: int,
    max_prompt_length: int | None = None,
    truncation: str = "keep_end_of_prompt",
) -> tuple[list[Encoded], TokenStats]:
    """Tokenize SFT rows (``messages`` or ``prompt``/``completion``) and truncate them.

    Returns the kept examples (each ``len(prompt_ids) + len(response_ids) <= max_length``)
    and the counts of rows, prefix mismatches, truncations and drops.
    """
    limits = _limits(max_length, max_prompt_length, truncation)
    stats, out = TokenStats(rows=len(rows)), []
    for row in rows:
        prompt, response = sft_prompt_response(row.data)
        prompt_ids, (response_ids,), mismatch = split_prompt_response(tokenizer, prompt, [response])
        stats.prefix_mismatch += mismatch
        fitted = _fit(prompt_ids, [response_ids], row, limits, truncation, stats)
        if fitted is not None:
            out.append(Encoded(fitted[0], fitted[1][0], row.source, row.line))
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
