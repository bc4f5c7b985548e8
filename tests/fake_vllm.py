"""A fake ``vllm`` package at the import boundary: records what harness asks of vLLM, answers from a script.

``install(monkeypatch, script)`` puts ``vllm``, ``vllm.lora.request`` and
``vllm.distributed.parallel_state`` into ``sys.modules`` and returns the ``Recorder``.
``script(prompt_ids, k, params)`` gives completion ``k`` of a prompt as
``(token_ids, finish_reason, stop_reason)``, the fields of vLLM's ``CompletionOutput``;
``generate`` takes one ``SamplingParams`` or one per prompt, as vLLM does.  The engine's
model sits where an in-process vLLM keeps it (``llm.llm_engine.model_executor.driver_worker
.model_runner.model``) and records each ``load_weights`` (cloned tensors, by name).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from dataclasses import dataclass, field


@dataclass
class Recorder:
    script: object
    engines: list = field(default_factory=list)      # kwargs of each vllm.LLM(...)
    generate_calls: list = field(default_factory=list)  # (prompts, SamplingParams, kwargs) of each generate
    lora_requests: list = field(default_factory=list)
    cleanups: list = field(default_factory=list)      # names of the cleanup calls, in order
    log: list = field(default_factory=list)           # ("open", model), ("close",); tests add their own
    loaded: list = field(default_factory=list)        # {name: tensor} of each load_weights call
    env: list = field(default_factory=list)           # VLLM_ENABLE_V1_MULTIPROCESSING when each engine opened


class SamplingParams:
    def __init__(self, **fields):
        self.fields = fields
        self.n = fields.get("n", 1)


@dataclass
class CompletionOutput:
    token_ids: list
    finish_reason: str
    stop_reason: object
    logprobs: list | None = None  # per token {token_id: Logprob}, when the script gives a 4th field


@dataclass
class RequestOutput:
    prompt_token_ids: list
    outputs: list


def install(monkeypatch, script) -> Recorder:
    rec = Recorder(script)

    class EngineCore:
        def shutdown(self):
            rec.cleanups.append("shutdown")
            rec.log.append(("close",))

    class Model:
        def load_weights(self, weights):
            rec.loaded.append({name: t.detach().clone() for name, t in weights})
            rec.log.append(("load_weights",))

    class LLM:
        def __init__(self, **kwargs):
            rec.engines.append(kwargs)
            rec.env.append(os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING"))
            rec.log.append(("open", kwargs["model"]))
            worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(model=Model()))
            self.llm_engine = types.SimpleNamespace(engine_core=EngineCore(),
                                                    model_executor=types.SimpleNamespace(driver_worker=worker))

        def reset_prefix_cache(self):
            rec.log.append(("reset_prefix_cache",))

        def generate(self, prompts, sampling_params, **kwargs):
            rec.generate_calls.append((prompts, sampling_params, kwargs))
            per_prompt = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
            return [RequestOutput(p["prompt_token_ids"],
                                  [CompletionOutput(*rec.script(p["prompt_token_ids"], k, sp)) for k in range(sp.n)])
                    for p, sp in zip(prompts, per_prompt)]

    class LoRARequest:
        def __init__(self, name, int_id, path):
            self.args = (name, int_id, path)
            rec.lora_requests.append(self.args)

    names = ("vllm", "vllm.lora", "vllm.lora.request", "vllm.distributed", "vllm.distributed.parallel_state")
    modules = {name: types.ModuleType(name) for name in names}
    for name, module in modules.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec("vllm") sees it installed
        monkeypatch.setitem(sys.modules, name, module)
    modules["vllm"].LLM, modules["vllm"].SamplingParams = LLM, SamplingParams
    modules["vllm.lora.request"].LoRARequest = LoRARequest
    state = modules["vllm.distributed.parallel_state"]
    state.destroy_model_parallel = lambda: rec.cleanups.append("destroy_model_parallel")
    state.destroy_distributed_environment = lambda: rec.cleanups.append("destroy_distributed_environment")
    return rec
