"""One generated completion, as every generation backend returns it (no torch: `harness judge` on output
files and the backend choice import this without a model stack)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Completion:
    text: str
    num_tokens: int
    token_ids: list[int] = field(default_factory=list)  # the generated ids, EOS included (for log-probs)


def _completion(tokens: list[int], tokenizer, eos: int, pad: int) -> Completion:
    """Cut at the first EOS (kept in the count, as it was generated) and decode."""
    if eos in tokens:
        tokens = tokens[: tokens.index(eos) + 1]
    else:
        while tokens and tokens[-1] == pad:
            tokens = tokens[:-1]
    return Completion(tokenizer.decode(tokens, skip_special_tokens=True).strip(), len(tokens), tokens)
