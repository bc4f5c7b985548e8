"""vLLM rollouts for the online loop: one in-process engine per stage, sent the policy's weights before each rollout.

``method.rollout_backend`` picks the rollout generator: ``transformers`` samples with the live
policy (``harness.eval.backends.TransformersGenerator``); ``vllm`` samples with a ``vllm.LLM``
that the stage holds from its first rollout to its end.  ``auto`` is vLLM when it is installed
and CUDA is present, else transformers, resolved (``resolve_rollout_backend``) before the stage
is keyed, so a stage's key names the backend that sampled it (``rollouts_keyed``).

Before every rollout ``VllmRollouts.sync`` gives the engine the policy as it is now:

- full fine-tuning: every tensor of the policy's state dict is loaded into the engine's model
  (``model.load_weights``, vLLM's own checkpoint loader, which maps HF names onto its fused
  layers), as TRL's colocate mode does, then the prefix cache is reset (it holds keys and values
  of the old weights);
- LoRA: the adapter is saved to a fresh directory and served under a new ``LoRARequest`` id
  (vLLM caches adapters by id, so a reused id would serve the old adapter).

vLLM only samples: the log-probs every loss reads are recomputed by the training model.  The
engine's model is reached in this process (``llm.llm_engine.model_executor.driver_worker
.model_runner.model``, the path TRL 1.x uses), which needs the V1 engine core in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set here); a vLLM without that path is an error that
names the key to change.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import torch

from harness.config.spec import GenerationSpec
from harness.errors import HarnessError
from harness.eval.backends import (
    GPU_MEMORY_UTILIZATION,
    resolve_backend,
    sampling_options,
    shutdown_engine,
    vllm_max_lora_rank,
    with_eos,
)
from harness.eval.completions import Completion, _completion

ROLLOUT_KEY = "method.rollout_backend"


def resolve_rollout_backend(name: str) -> str:
    """``transformers`` or ``vllm`` for a ``method.rollout_backend`` value (``auto``: vLLM when installed and
    CUDA is present); vLLM asked for but unavailable is an error naming the key."""
    return resolve_backend(name, ROLLOUT_KEY)


def rollouts_keyed(stage):
    """``stage`` with ``method.rollout_backend`` as the stage key sees it: resolved to the backend that will
    sample, and left out when that is transformers (how every online stage sampled before the key existed,
    so their cached stages keep their keys)."""
    params = dict(stage.method.params)
    if "rollout_backend" not in params:
        return stage
    backend = resolve_rollout_backend(params.pop("rollout_backend"))
    if backend != "transformers":
        params["rollout_backend"] = backend
    return dataclasses.replace(stage, method=dataclasses.replace(stage.method, params=params))


def engine_model(llm):
    """The ``torch.nn.Module`` inside an in-process vLLM engine, whose ``load_weights`` takes HF-named tensors."""
    try:
        return llm.llm_engine.model_executor.driver_worker.model_runner.model
    except AttributeError:
        import vllm

        raise HarnessError(
            f"{ROLLOUT_KEY}: vllm {getattr(vllm, '__version__', '?')} does not expose its model in this process "
            "(llm.llm_engine.model_executor.driver_worker.model_runner.model), which weight sync needs; "
            f"use a vLLM whose V1 engine runs in-process with VLLM_ENABLE_V1_MULTIPROCESSING=0 (0.10 and later), "
            f"or set {ROLLOUT_KEY}=transformers") from None


class VllmRollouts:
    """A vLLM engine serving the stage's starting model (``model_path``), kept in step with the policy by ``sync``.

    ``lora_rank`` > 0: the policy is a PEFT model whose adapter is served on the engine's base;
    ``max_model_len``: prompt plus completion (``train.max_length``).  ``engine_kwargs`` override the
    ``vllm.LLM`` defaults here (bf16, ``GPU_MEMORY_UTILIZATION``, the stage's seed).
    """

    name = "vllm"

    def __init__(self, model_path: str, tokenizer, max_model_len: int, lora_rank: int = 0, seed: int = 0,
                 **engine_kwargs):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core in this process: weights reachable
        import vllm  # the optional `vllm` extra: only a vLLM rollout needs it

        self.tokenizer, self.lora = tokenizer, lora_rank > 0
        lora = {"enable_lora": True, "max_lora_rank": vllm_max_lora_rank(lora_rank), "max_loras": 1} \
            if self.lora else {}
        options = {"seed": seed, "gpu_memory_utilization": GPU_MEMORY_UTILIZATION, "dtype": "bfloat16",
                   "max_model_len": max_model_len, **lora, **engine_kwargs}
        self.llm = vllm.LLM(model=model_path, tokenizer=model_path, **options)
        self.adapters = Path(tempfile.mkdtemp(prefix="harness-rollout-lora-")) if self.lora else None
        self.lora_request = None
        self.syncs = 0

    def sync(self, policy) -> None:
        """Give the engine ``policy``'s current weights (full fine-tuning) or adapter (LoRA)."""
        self.syncs += 1
        if self.lora:
            from vllm.lora.request import LoRARequest

            path = self.adapters / f"sync-{self.syncs}"
            policy.save_pretrained(str(path))
            previous = self.adapters / f"sync-{self.syncs - 1}"
            if previous.exists():  # loaded by vLLM when it was served
                shutil.rmtree(previous)
            self.lora_request = LoRARequest(f"policy-{self.syncs}", self.syncs, str(path))
        else:
            with torch.no_grad():
                engine_model(self.llm).load_weights((name, t.detach()) for name, t in policy.state_dict().items())
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if callable(reset):  # cached keys and values were computed with the old weights
            reset()

    def sampling_params(self, settings: GenerationSpec, prompts: int, **extra) -> list:
        """One ``vllm.SamplingParams`` per prompt: the transformers path's settings (``sampling_options``),
        each prompt seeded on its own from ``settings.seed`` (one shared seed would give every prompt the
        same random stream)."""
        from vllm import SamplingParams

        options = sampling_options(settings, self.tokenizer.eos_token_id)
        seeds = torch.randint(0, 2**31 - 1, (prompts,), generator=torch.Generator().manual_seed(settings.seed))
        return [SamplingParams(**{**options, "seed": int(s), **extra}) for s in seeds]

    def generate(self, prompts: list[list[int]], settings: GenerationSpec, progress: bool = False,
                 desc: str = "rollout") -> list[list[Completion]]:
        """``settings.n`` completions per prompt, in prompt order, cut at EOS as the transformers path cuts them."""
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts],
                                 self.sampling_params(settings, len(prompts)), use_tqdm=progress,
                                 lora_request=self.lora_request)
        return [[_completion(with_eos(o, eos), self.tokenizer, eos, pad) for o in out.outputs] for out in outs]

    def close(self) -> None:
        """Shut the engine down and give its GPU memory back."""
        if self.adapters is not None:
            shutil.rmtree(self.adapters, ignore_errors=True)
        shutdown_engine(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
