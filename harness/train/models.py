"""Loading, adapting and saving models: toy://, HF directories or hub ids.

Under LoRA the reference model is the adapter-disabled policy, never a
second copy; a LoRA stage's adapter is merged before the stage's output is
saved, so the next stage starts from plain weights and attaches a fresh
adapter (DESIGN.md, "Stages and caches").
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.cache import atomic_path
from harness.errors import HarnessError
from harness.toy import TOY_MODELS, is_toy, toy_model_path, toy_name
from harness.toy.tokenizer import build_tokenizer


def device() -> torch.device:
    """Where training and generation run: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_model_path(uri: str, cache_dir: Path) -> str:
    """A loadable location for ``uri``: toy models are built (once) into the cache."""
    if is_toy(uri):
        return str(toy_model_path(toy_name(uri), cache_dir, progress=True))
    return uri


def model_identity(uri: str) -> str:
    """A stable id for a starting model, used in stage and reference cache keys.

    Local directories are identified by the content of their weight and config
    files (so a retrained directory is a different model); hub ids and toy
    models by name.
    """
    path = Path(uri)
    if not path.is_dir():
        return f"name:{uri}"
    digest = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.suffix in {".safetensors", ".bin", ".json"}):
            digest.update(f.name.encode())
            digest.update(f"{f.stat().st_size}:{_file_head_hash(f)}".encode())
    return f"dir:{digest.hexdigest()[:16]}"


def _file_head_hash(path: Path, chunk: int = 1 << 20) -> str:
    # Hash the first and last MiB plus the size: cheap for multi-GB weights,
    # and any retraining changes them.
    h = hashlib.sha256()
    with path.open("rb") as fh:
        h.update(fh.read(chunk))
        if path.stat().st_size > 2 * chunk:
            fh.seek(-chunk, os.SEEK_END)
            h.update(fh.read(chunk))
    return h.hexdigest()[:16]


def load_tokenizer(path: str):
    """The tokenizer of a model, with a pad token (falling back to EOS)."""
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise HarnessError(f"model {path!r}: cannot load tokenizer ({exc})") from exc
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_only(uri: str, key: str = "model"):
    """The tokenizer of model ``uri`` without its weights (``key`` names the setting in errors).

    Every toy model shares the toy tokenizer, so for ``toy://NAME`` it is built directly
    (seconds) without building the model.
    """
    if is_toy(uri):
        if toy_name(uri) not in TOY_MODELS:
            raise HarnessError(f"{key}: {uri!r} is not a toy model (toy models: {sorted(TOY_MODELS)})")
        return build_tokenizer()
    return load_tokenizer(uri)


def load_model(path: str, dtype: torch.dtype = torch.float32):
    """A causal LM in ``dtype`` (master weights; autocast handles mixed precision)."""
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as exc:
        raise HarnessError(f"model {path!r}: cannot load ({exc})") from exc


def attach_lora(model, rank: int, alpha: float | None, dropout: float, target_modules, task: str = "CAUSAL_LM"):
    """Wrap ``model`` with a fresh LoRA adapter; rank 0 means full fine-tuning (no-op).

    ``task`` "SEQ_CLS" (reward models) also trains the new scalar head in full.
    """
    if rank == 0:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type=task,
    )
    return get_peft_model(model, config)


def is_lora(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "merge_and_unload")


def merged(model):
    """Plain weights: a LoRA model with its adapter merged in, else the model itself."""
    return model.merge_and_unload() if is_lora(model) else model


def save_checkpoint(model, tokenizer, out_dir: Path) -> Path:
    """Save an HF-format checkpoint atomically (write next to it, then rename)."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        merged(model).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def training_dtype(precision: str, on_gpu: bool) -> tuple[torch.dtype, str]:
    """(weight dtype, accelerate mixed_precision) for ``train.precision``.

    ``auto`` is fp32 on CPU and bf16 autocast on GPU, with fp32 master weights.
    """
    if precision == "auto":
        precision = "bf16" if on_gpu else "fp32"
    if precision in ("bf16", "fp16") and not on_gpu:
        raise HarnessError(f"train.precision: {precision!r} needs a GPU; use fp32 or auto on CPU")
    return torch.float32, {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
