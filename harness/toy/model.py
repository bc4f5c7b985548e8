"""Toy causal LMs: built locally, cached, loadable with the Auto classes.

``tiny`` is a small Llama briefly pretrained on plain-text arithmetic (no chat
format), so it is a weak but real base model.  ``micro`` is a much smaller,
randomly initialized Llama for fast tests.  Both share the toy tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import time

from harness.cache import atomic_path, file_lock
from harness.console import say
from harness.errors import HarnessError
from harness.toy.arith import pretrain_lines
from harness.toy.datasets import DATA_VERSION
from harness.toy.tokenizer import CHAT_TEMPLATE, VOCAB_SIZE, build_tokenizer

VERSION = 1

# name -> (Llama config overrides, pretraining steps, description)
_SPECS = {
    "tiny": (
        {"hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 4, "num_attention_heads": 4},
        600,
        "Llama d=128, 4 layers (~0.8M params), pretrained ~90 s on plain-text arithmetic",
    ),
    "micro": (
        {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        0,
        "Llama d=32, 2 layers, random init: builds in seconds, for tests",
    ),
}
TOY_MODELS = {name: spec[2] for name, spec in _SPECS.items()}

# Pretraining recipe: 600 steps take ~80-90 s on 2 free CPU cores (~130 ms/step).
PRETRAIN = {"block": 64, "batch": 32, "lr": 3e-3, "warmup": 0.05, "weight_decay": 0.01, "lines": 40_000}


def model_config(name: str, tokenizer):
    """LlamaConfig for toy model ``name`` with the tokenizer's special ids."""
    from transformers import LlamaConfig

    overrides = _SPECS[name][0]
    return LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=overrides["num_attention_heads"],
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )


def pretrain_blocks(tokenizer, seed: int):
    """LongTensor [n_blocks, block] of packed pretraining text, docs split by pad."""
    import torch

    lines = pretrain_lines(PRETRAIN["lines"], seed)
    ids: list[int] = []
    for enc in tokenizer(lines, add_special_tokens=False)["input_ids"]:
        ids += enc + [tokenizer.pad_token_id]  # <|endoftext|> separates documents
    block = PRETRAIN["block"]
    n = len(ids) // block
    return torch.tensor(ids[: n * block]).view(n, block)


def lr_at(step: int, total: int, peak: float, warmup: float) -> float:
    """Linear warmup then cosine decay to zero."""
    n_warm = max(1, int(total * warmup))
    if step < n_warm:
        return peak * (step + 1) / n_warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - n_warm) / max(1, total - n_warm)))


def pretrain(model, tokenizer, steps: int, seed: int, progress: bool) -> None:
    """Next-token training on packed plain-text arithmetic, in place."""
    import torch

    blocks = pretrain_blocks(tokenizer, seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=PRETRAIN["lr"], weight_decay=PRETRAIN["weight_decay"]
    )
    model.train()
    start = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, PRETRAIN["lr"], PRETRAIN["warmup"])
        batch = blocks[torch.randint(len(blocks), (PRETRAIN["batch"],), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if progress and (step % 100 == 0 or step == steps - 1):
            say(f"toy pretrain {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - start:.0f}s)")
    model.eval()


def build_model(name: str, out_dir: pathlib.Path, seed: int, progress: bool) -> None:
    """Create, pretrain (tiny) and save model + tokenizer into ``out_dir``."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(model_config(name, tokenizer))
    steps = _SPECS[name][1]
    if steps:
        pretrain(model, tokenizer, steps, seed, progress)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def toy_model_path(name: str, cache_dir: pathlib.Path, seed: int = 0, progress: bool = True):
    """Directory of toy model ``name`` under ``cache_dir/toy``, built once if missing.

    The build goes to a temp dir beside the target and is renamed into place, so
    a reader never sees a half-written model; a file lock stops two processes
    from building the same model at once.
    """
    if name not in _SPECS:
        raise HarnessError(f"unknown toy model {name!r}; known: {', '.join(TOY_MODELS)}")
    root = pathlib.Path(cache_dir) / "toy"
    # The fingerprint covers the recipe and the pretraining data, so changing either builds anew.
    final = root / f"{name}-v{VERSION}-seed{seed}-{model_fingerprint(name, seed)}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f"{final.name}.lock"):
        if final.is_dir():  # another process built it while we waited
            return final
        if progress:
            say(f"building toy model {name} (seed {seed}) into {final}")
        with atomic_path(final) as tmp:
            build_model(name, tmp, seed, progress)
    return final


def model_fingerprint(name: str, seed: int = 0) -> str:
    """12-hex hash of everything that determines the built model."""
    blob = json.dumps([VERSION, name, seed, _SPECS[name][:2], PRETRAIN, VOCAB_SIZE, CHAT_TEMPLATE, DATA_VERSION])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
