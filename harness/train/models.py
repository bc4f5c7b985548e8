"""Loading, adapting and saving models: toy://, HF directories or hub ids.

Under LoRA the reference model is the adapter-disabled policy, never a
second copy; a LoRA stage's adapter is merged before the stage's output is
saved, so the next stage starts from plain weights and attaches a fresh
adapter (DESIGN.md, "Stages and caches").
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from harness.cache import atomic_path, user_cache_dir
from harness.errors import HarnessError
from harness.profile import timed
from harness.toy import TOY_MODELS, is_toy, toy_model_path, toy_name
from harness.toy.tokenizer import build_tokenizer

# peft is imported where an adapter or k-bit loading needs it: a full fine-tune never pays its start-up (~1 s).


def device() -> torch.device:
    """Where training and generation run: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def match_threads() -> int:
    """torch's intra-op threads: the cores this process may run on (``os.sched_getaffinity``), unless
    ``OMP_NUM_THREADS`` says otherwise.  torch's default counts the machine's cores, which oversubscribes
    a process pinned to fewer (a container's cpuset, ``taskset``, one trial of a parallel sweep).
    Returns the number in use."""
    if not os.environ.get("OMP_NUM_THREADS") and hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
        if cores and torch.get_num_threads() != cores:
            torch.set_num_threads(cores)
    return torch.get_num_threads()


def resolve_model_path(uri: str, cache_dir: Path) -> str:
    """A loadable location for ``uri``: toy models are built once into the user's cache (``user_cache_dir``),
    named by the fingerprint of their recipe, so a run from any directory finds them; ``cache_dir`` (the
    results_dir's cache) is the fallback where the user's cache cannot be written."""
    if is_toy(uri):
        root = user_cache_dir()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            root = Path(cache_dir)
        return str(toy_model_path(toy_name(uri), root, progress=True))
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


WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx",
                             ".npy", ".npz", ".pkl"})


def tokenizer_identity(uri: str) -> str:
    """What ``load_tokenizer(uri)`` loads, as a digest: a directory's every file but weights (tokenizer
    files, chat template, configs), by name and full content; a hub id by name (as ``model_identity``)."""
    path = Path(uri)
    if not path.is_dir():
        return f"name:{uri}"
    digest = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and f.suffix not in WEIGHT_SUFFIXES:
            digest.update(f"{f.name}:{f.stat().st_size}:".encode())
            digest.update(hashlib.sha256(f.read_bytes()).digest())
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


def load_model(path: str, dtype: torch.dtype = torch.float32, quantization: BitsAndBytesConfig | None = None):
    """A causal LM in ``dtype`` (master weights; autocast handles mixed precision).

    With ``quantization`` (``quantization_config``) the linear layers load in 4 bit straight onto
    the GPU, and the model is made ready for k-bit training (peft's ``prepare_model_for_kbit_training``:
    the remaining weights in fp32, input gradients on for gradient checkpointing).
    """
    extra = {} if quantization is None else {"quantization_config": quantization,
                                             "device_map": {"": torch.cuda.current_device()}}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **extra)
    except OSError as exc:
        raise HarnessError(f"model {path!r}: cannot load ({exc})") from exc
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def quantization_config(quantize: str, on_gpu: bool) -> BitsAndBytesConfig | None:
    """The 4-bit loading config for ``lora.quantize`` (None for ``none``).

    ``nf4`` is QLoRA's recipe (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized
    LLMs", sections 2-3): 4-bit NormalFloat weights, double quantization of the quantization
    constants, and bf16 compute.  bitsandbytes' 4-bit kernels need CUDA, so on CPU it is refused.
    """
    if quantize == "none":
        return None
    if not on_gpu:
        raise HarnessError(f"lora.quantize: {quantize!r} (QLoRA) needs a CUDA GPU for bitsandbytes' 4-bit "
                           "kernels; on CPU use lora.quantize: none")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise HarnessError(f"lora.quantize: {quantize!r} needs the bitsandbytes package "
                           "(pip install bitsandbytes), or use lora.quantize: none")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def is_quantized(model) -> bool:
    """Whether ``model`` (a transformers model, not a peft wrapper) was loaded with a quantization config."""
    return getattr(model, "hf_quantizer", None) is not None or bool(getattr(model, "is_loaded_in_4bit", False))


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


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing of every decoder layer, non-reentrant.

    The non-reentrant kind (PyTorch's recommended one) needs no block input that requires a
    gradient, so it is safe under LoRA, where the embeddings are frozen.  transformers 5 renamed the method.
    """
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def checkpointable(module) -> bool:
    """Whether ``module`` is a transformers (or PEFT) model that ``enable_checkpointing`` can switch on."""
    return any(hasattr(module, name) for name in ("activation_checkpointing_enable", "gradient_checkpointing_enable"))


def is_lora(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "merge_and_unload")


def merged(model, base_path: str | None = None):
    """Plain weights: a LoRA model with its adapter merged in, else the model itself.

    A QLoRA adapter is merged into its base loaded again unquantized (``merged_into``), not into the
    4-bit weights, which would round the update away; ``base_path`` is that base (the stage's input).
    """
    if not is_lora(model):
        return model
    if is_quantized(model.get_base_model()):
        if base_path is None:
            raise HarnessError("merging a QLoRA adapter needs the path of its unquantized base model")
        return merged_into(model, base_path)
    return model.merge_and_unload()


def merged_into(model, base_path: str):
    """``model``'s LoRA adapter merged into a fresh fp32 copy of the model at ``base_path``, on ``device()``."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    plain = get_peft_model(load_model(base_path), model.peft_config["default"])
    set_peft_model_state_dict(plain, get_peft_model_state_dict(model))
    return plain.merge_and_unload().to(device())


@timed("checkpoint")
def save_checkpoint(model, tokenizer, out_dir: Path) -> Path:
    """Save an HF-format checkpoint atomically (write next to it, then rename).

    A write that fails (a full disk, a read-only directory) is a HarnessError naming the
    checkpoint; the partial copy is removed, so nothing there looks like a checkpoint.
    safetensors reports its own I/O errors as ``SafetensorError``, not ``OSError``.
    """
    out_dir = Path(out_dir)
    try:
        with atomic_path(out_dir) as tmp:
            merged(model).save_pretrained(tmp)  # (a QLoRA stage's model is merged by the caller, which has the base)
            tokenizer.save_pretrained(tmp)
    except (OSError, SafetensorError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise HarnessError(f"cannot write the checkpoint {out_dir}: {reason}; free space there (or set "
                           "results_dir elsewhere) and run the same command again") from exc
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
