"""Generation backends behind one interface: transformers (CPU or GPU, batched) and vLLM (GPU).

A generator has ``name``, ``tokenizer``, ``generate(prompts, settings, progress, desc)``
(``settings.n`` completions per prompt, in prompt order; a prompt is token ids already
rendered with the trial's own chat template by ``harness.data.tokenization.encode_prompt``,
so both backends see the same bytes) and ``close()``, and is a context manager.  Both cut
and count completions with ``generation._completion`` (up to the first EOS, counted).

``eval.generation.backend`` picks one: ``auto`` is vLLM when the ``vllm`` extra is
installed and CUDA is present, else transformers.  Callers resolve it (``resolved``)
before anything is keyed or recorded, so caches and outputs rows name the backend that ran.
vLLM serves a directory (a checkpoint, or a base model plus a LoRA adapter through
``LoRARequest``); it is imported only when a vLLM generator is built.
"""

from __future__ import annotations

import gc
import importlib.util
import json
from pathlib import Path

from harness.config.spec import GenerationSpec
from harness.errors import HarnessError
from harness.eval.completions import Completion, _completion
from harness.lazy import lazy

# torch, transformers and the generation code are imported where a generator runs, so that resolving a backend
# (`harness judge` on output files) loads none of them.
generate = lazy("harness.eval.generation:generate")
load_model = lazy("harness.train.models:load_model")
device = lazy("harness.train.models:device")

BACKEND_KEY = "eval.generation.backend"
# vLLM preallocates this share of the GPU (weights + KV cache); the rest is left to the HF
# policy and reference models that the sweep keeps for the KL and for training.
GPU_MEMORY_UTILIZATION = 0.5
# The max_lora_rank values every vLLM version accepts (its LoRAConfig rejects any other).
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def resolve_backend(name: str, key: str = BACKEND_KEY) -> str:
    """``transformers`` or ``vllm`` for an ``eval.generation.backend`` (or ``key``) value; vLLM unavailable is an
    error naming ``key``."""
    if name == "transformers":
        return name
    installed = importlib.util.find_spec("vllm") is not None
    if name == "auto" and not installed:
        return "transformers"
    cuda = cuda_available()
    if name == "auto":
        return "vllm" if cuda else "transformers"
    if name != "vllm":
        raise HarnessError(f"{key}: {name!r} is not a backend (auto, transformers, vllm)")
    if not installed:
        raise HarnessError(f"{key}: vllm is not installed; install the extra "
                           f"(pip install -e '.[vllm]') or set {key}=transformers")
    if not cuda:
        raise HarnessError(f"{key}: vllm needs a CUDA GPU and torch sees none; "
                           f"set {key}=transformers (or auto)")
    return "vllm"


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (imported here: a backend that is not asked about needs no torch)."""
    import torch

    return torch.cuda.is_available()


def resolved(settings: GenerationSpec) -> GenerationSpec:
    """``settings`` with ``backend`` resolved to the one that will run."""
    return settings.model_copy(update={"backend": resolve_backend(settings.backend)})


def adapter_config(adapter_path: str) -> dict:
    """The ``adapter_config.json`` of a PEFT LoRA adapter directory."""
    path = Path(adapter_path) / "adapter_config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HarnessError(f"{path}: cannot read the LoRA adapter's config ({exc})") from None


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds an adapter of rank ``rank``."""
    fits = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fits:
        raise HarnessError(f"LoRA rank {rank}: vLLM serves adapters up to rank {VLLM_LORA_RANKS[-1]}; "
                           f"set {BACKEND_KEY}=transformers")
    return fits[0]


class TransformersGenerator:
    """Batched ``model.generate`` on the model's own device (``harness.eval.generation.generate``)."""

    name = "transformers"

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def generate(self, prompts: list[list[int]], settings: GenerationSpec, progress: bool = True,
                 desc: str = "generate") -> list[list[Completion]]:
        return generate(self.model, self.tokenizer, prompts, settings, self.batch_size, progress, desc)

    def close(self) -> None:
        self.model = None  # a model the caller passed in lives on with the caller

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VllmGenerator:
    """A vLLM engine serving ``model_path``, with the LoRA adapter at ``adapter_path`` on every request.

    ``engine_kwargs`` go to ``vllm.LLM`` and override its defaults here (seed 0, a
    ``GPU_MEMORY_UTILIZATION`` share of the GPU, bf16, max_lora_rank from the adapter's ``r``).
    """

    name = "vllm"

    def __init__(self, model_path: str, tokenizer, adapter_path: str | None = None, **engine_kwargs):
        import vllm  # the optional `vllm` extra: only a vLLM run needs it

        self.tokenizer = tokenizer
        lora = {}
        self.lora_request = None
        if adapter_path is not None:
            from vllm.lora.request import LoRARequest

            lora = {"max_lora_rank": vllm_max_lora_rank(int(adapter_config(adapter_path)["r"]))}
            name = Path(adapter_path).resolve().name or "adapter"
            self.lora_request = LoRARequest(name, 1, str(adapter_path))
        # bf16, the precision harness trains in on a GPU: harness saves fp32 checkpoints, which vLLM's
        # dtype "auto" would serve in fp16.
        options = {"seed": 0, "gpu_memory_utilization": GPU_MEMORY_UTILIZATION, "dtype": "bfloat16", **lora,
                   **engine_kwargs}
        self.llm = vllm.LLM(model=model_path, tokenizer=model_path, enable_lora=adapter_path is not None,
                            **options)

    def generate(self, prompts: list[list[int]], settings: GenerationSpec, progress: bool = True,
                 desc: str = "generate") -> list[list[Completion]]:
        """One request per prompt, as token ids (no re-tokenizing); vLLM keeps prompt order.
        ``desc`` is unused: vLLM draws its own progress bar."""
        from vllm import SamplingParams

        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        params = SamplingParams(**sampling_options(settings, eos))
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=progress,
                                 lora_request=self.lora_request)
        return [[_completion(with_eos(o, eos), self.tokenizer, eos, pad) for o in out.outputs]
                for out in outs]

    def close(self) -> None:
        """Shut the engine down and give its GPU memory back (before training or another engine starts)."""
        shutdown_engine(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def shutdown_engine(owner) -> None:
    """Shut ``owner.llm`` (a ``vllm.LLM``, or None: nothing to do) down, drop it and give its GPU memory back."""
    llm, owner.llm = owner.llm, None  # the last reference, released before the collection below
    if llm is None:
        return
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    shutdown = getattr(core, "shutdown", None)
    if callable(shutdown):  # vLLM v1 runs the engine in a child process
        shutdown()
    del llm
    try:
        from vllm.distributed.parallel_state import (
            destroy_distributed_environment,
            destroy_model_parallel,
        )
    except ImportError:  # not in every vLLM version
        pass
    else:
        destroy_model_parallel()
        destroy_distributed_environment()
    gc.collect()
    if cuda_available():
        import torch

        torch.cuda.empty_cache()


def sampling_options(settings: GenerationSpec, eos: int) -> dict:
    """``vllm.SamplingParams`` fields for ``settings``: greedy at temperature 0, seeded, stopping at EOS."""
    greedy = settings.temperature == 0
    return {"n": settings.n, "temperature": settings.temperature, "top_p": 1.0 if greedy else settings.top_p,
            "max_tokens": settings.max_new_tokens, "seed": settings.seed, "stop_token_ids": [eos]}


def with_eos(output, eos: int) -> list[int]:
    """One vLLM completion's ids, with the EOS it stopped on appended when vLLM left it out,
    so the count (``num_tokens``) and the KL's ids are those the transformers path gives."""
    tokens = list(output.token_ids)
    stopped_on_eos = output.finish_reason == "stop" and output.stop_reason in (None, eos)
    if stopped_on_eos and (not tokens or tokens[-1] != eos):
        tokens.append(eos)
    return tokens


def open_generator(settings_or_backend: GenerationSpec | str, model_path: str, tokenizer, model=None,
                   adapter_path: str | None = None):
    """The generator for the resolved backend; use it as ``with open_generator(...) as gen:``.

    vLLM serves ``model_path`` (the base, with ``adapter_path`` as a LoRARequest) and ignores
    ``model``.  transformers uses ``model`` when given (already adapted), else loads
    ``model_path`` plus the PEFT adapter at ``adapter_path`` onto the GPU, or the CPU.
    """
    spec = settings_or_backend if isinstance(settings_or_backend, GenerationSpec) else None
    backend = resolve_backend(spec.backend if spec is not None else settings_or_backend)
    if backend == "vllm":
        return VllmGenerator(model_path, tokenizer, adapter_path, **({"seed": spec.seed} if spec else {}))
    if model is None:
        model = load_model(model_path)
        if adapter_path is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_path)
        model = model.to(device()).eval()
    return TransformersGenerator(model, tokenizer)
