"""Generation of eval outputs: batched transformers generation (CPU or GPU) and a suite's outputs rows.

Prompts are tokenized with the trial's own chat template
(``harness.data.tokenization.encode_prompt``), so a trial generates exactly the
way it was trained.  ``generate`` is the transformers backend; it and vLLM sit
behind one generator interface in ``harness.eval.backends``.
``generate_outputs`` turns a suite's items into outputs rows with any generator,
multi-turn for items with ``turns`` (each turn sees the model's own earlier answers).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from harness.config.spec import GenerationSpec
from harness.data.collate import left_pad
from harness.data.tokenization import encode_prompt
from harness.eval.completions import Completion, _completion


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


def _single_turn(items, generator, generation, progress, desc):
    prompts = [encode_prompt(generator.tokenizer, item["prompt"], generation.system_prompt) for item in items]
    completions = generator.generate(prompts, generation, progress=progress, desc=desc)
    return [[([p], [c]) for c in samples] for p, samples in zip(prompts, completions)]


def _multi_turn(items, generator, generation, progress, desc):
    """Turn 1 gets ``n`` samples per item; each sample's later turns continue its own conversation."""
    system = [] if generation.system_prompt is None else [{"role": "system", "content": generation.system_prompt}]
    first = _single_turn([{"prompt": [{"role": "user", "content": it["turns"][0]}]} for it in items],
                         generator, generation, progress, f"{desc} turn 1")
    runs = []  # [item index, messages so far, prompt ids per turn, completions per turn]
    for i, (item, samples) in enumerate(zip(items, first)):
        for [p], [c] in samples:
            turn = [{"role": "user", "content": item["turns"][0]}, {"role": "assistant", "content": c.text}]
            runs.append([i, system + turn, [p], [c]])
    one = generation.model_copy(update={"n": 1})
    for t in range(1, max(len(item["turns"]) for item in items)):
        active = [r for r in runs if t < len(items[r[0]]["turns"])]
        for r in active:
            r[1] = r[1] + [{"role": "user", "content": items[r[0]]["turns"][t]}]
        prompts = [encode_prompt(generator.tokenizer, r[1]) for r in active]
        outs = generator.generate(prompts, one, progress=progress, desc=f"{desc} turn {t + 1}")
        for r, p, [c] in zip(active, prompts, outs):
            r[1] = r[1] + [{"role": "assistant", "content": c.text}]
            r[2].append(p)
            r[3].append(c)
    per_item = [[] for _ in items]
    for i, _, prompts, comps in runs:
        per_item[i].append((prompts, comps))
    return per_item


def generate_outputs(items: list[dict], generator, generation: GenerationSpec, generator_name: str,
                     progress: bool = True, desc: str = "eval") -> tuple[list[dict], list[list]]:
    """Outputs rows (one per prompt and sample) and, per row, its (prompt_ids, generated_ids) per turn.

    ``generator`` is a ``harness.eval.backends`` generator; ``generator_name`` names the model in
    the rows.  A row has ``id, sample, instruction, output, generator, num_tokens, generation``
    (the decoding settings, ``backend`` the one that ran) and ``prompt`` (single-turn) or
    ``turns`` with ``output`` a list of answers, one per turn.
    """
    multi = any("turns" in item for item in items)
    per_item = (_multi_turn if multi else _single_turn)(items, generator, generation, progress, desc)
    settings = {**generation.model_dump(), "backend": generator.name}
    rows, samples = [], []
    for item, item_samples in zip(items, per_item):
        for s, (prompt_ids, completions) in enumerate(item_samples):
            texts = [c.text for c in completions]
            row = {"id": item["id"], "sample": s, "instruction": item["instruction"],
                   "output": texts if multi else texts[0], "generator": generator_name,
                   "num_tokens": sum(c.num_tokens for c in completions), "generation": settings}
            row.update({"turns": item["turns"]} if multi else {"prompt": item["prompt"]})
            rows.append(row)
            samples.append([(p, c.token_ids) for p, c in zip(prompt_ids, completions)])
    return rows, samples


def generation_for(base: GenerationSpec, options: dict) -> GenerationSpec:
    """A suite's decoding settings: its own non-null options override ``eval.generation``."""
    own = {k: options[k] for k in ("max_new_tokens", "temperature", "top_p", "n", "seed")
           if options.get(k) is not None}
    return base.model_copy(update=own)
