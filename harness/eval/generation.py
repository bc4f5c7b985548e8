"""Batched generation with transformers (CPU or GPU).

Prompts arrive already tokenized with the trial's own chat template
(``harness.data.tokenization.encode_prompt``), so a trial generates exactly the
way it was trained.  vLLM joins behind the same function signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from harness.config.spec import GenerationSpec
from harness.data.collate import left_pad


@dataclass
class Completion:
    text: str
    num_tokens: int
    token_ids: list[int] = field(default_factory=list)  # the generated ids, EOS included (for log-probs)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], settings: GenerationSpec,
             batch_size: int = 64, progress: bool = True, desc: str = "generate") -> list[list[Completion]]:
    """``settings.n`` completions per prompt, in prompt order.

    Greedy when temperature is 0, else sampled with a seeded generator, so a
    re-run reproduces its samples on the same hardware.  Prompts are batched
    in length order to waste little padding.
    """
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[Completion]] = [[] for _ in prompts]
    torch.manual_seed(settings.seed)
    sample = settings.temperature > 0
    extra = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p} if sample else {
        "do_sample": False}
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for idx in tqdm(batches, desc=desc, disable=None if progress else True, unit="batch", leave=False):
        input_ids, attention = left_pad([prompts[i] for i in idx], pad)
        out = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device),
            max_new_tokens=settings.max_new_tokens, num_return_sequences=settings.n,
            eos_token_id=eos, pad_token_id=pad, top_k=None, **extra,
        )
        new = out[:, input_ids.shape[1]:].cpu()
        for row, tokens in enumerate(new):
            results[idx[row // settings.n]].append(_completion(tokens.tolist(), tokenizer, eos, pad))
    return results


def _completion(tokens: list[int], tokenizer, eos: int, pad: int) -> Completion:
    """Cut at the first EOS (kept in the count, as it was generated) and decode."""
    if eos in tokens:
        tokens = tokens[: tokens.index(eos) + 1]
    else:
        while tokens and tokens[-1] == pad:
            tokens = tokens[:-1]
    return Completion(tokenizer.decode(tokens, skip_special_tokens=True).strip(), len(tokens), tokens)
