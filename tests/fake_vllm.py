"""A fake ``vllm`` package at the import boundary: records what harness asks of vLLM, answers from a script.

``install(monkeypatch, script)`` puts ``vllm``, ``vllm.lora.request`` and
``vllm.distributed.parallel_state`` into ``sys.modules`` and returns the ``Recorder``.
``script(prompt_ids, k, params)`` gives completion ``k`` of a prompt as
``(token_ids, finish_reason, stop_reason)``, the fields of vLLM's ``CompletionOutput``.
"""

from __future__ import annotations

import importlib.machinery
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


class SamplingParams:
    def __init__(self, **fields):
        self.fields = fields
        self.n = fields.get("n", 1)


@dataclass
class CompletionOutput:
    token_ids: list
    finish_reason: str
    stop_reason: object


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

    class LLM:
        def __init__(self, **kwargs):
            rec.engines.append(kwargs)
            rec.log.append(("open", kwargs["model"]))
            self.llm_engine = types.SimpleNamespace(engine_core=EngineCore())

        def generate(self, prompts, sampling_params, **kwargs):
            rec.generate_calls.append((prompts, sampling_params, kwargs))
            return [RequestOutput(p["prompt_token_ids"],
                                  [CompletionOutput(*rec.script(p["prompt_token_ids"], k, sampling_params))
                                   for k in range(sampling_params.n)]) for p in prompts]

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
