"""Generation backends: the vLLM requests (a fake ``vllm`` at the import boundary), the LoRA plumbing,
EOS counting identical to transformers on a tiny real model, releasing the engine, and backend resolution."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.config.spec import GenerationSpec
from harness.data.tokenization import encode_prompt
from harness.errors import HarnessError
from harness.eval.backends import (
    GPU_MEMORY_UTILIZATION,
    TransformersGenerator,
    VllmGenerator,
    open_generator,
    resolve_backend,
    resolved,
)
from harness.eval.completions import _completion
from harness.eval.generation import generate_outputs
from harness.toy.tokenizer import build_tokenizer
from tests import fake_vllm


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()  # eos 2 (<|im_end|>), pad 0


def tiny_model(vocab: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


def counting_script(prompt_ids, k, params):
    """Completion k of a prompt: 10+k, 11+k, then EOS left out (vLLM's stop on EOS), finish 'stop'."""
    return [10 + k, 11 + k], "stop", None


@pytest.fixture
def cuda(monkeypatch):
    """Make torch report a GPU (the vLLM code path), recording empty_cache calls."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    return calls


# ---------------------------------------------------------------- requests


def test_vllm_requests_are_token_ids_with_the_settings_sampling_params(monkeypatch, tokenizer):
    rec = fake_vllm.install(monkeypatch, counting_script)
    prompts = [[288, 261, 223], [5, 6, 7, 8, 9]]
    settings = GenerationSpec(n=3, temperature=0.7, top_p=0.9, max_new_tokens=17, seed=5)
    gen = VllmGenerator("/models/ckpt", tokenizer, dtype="float16")
    out = gen.generate(prompts, settings, progress=False)

    [engine] = rec.engines
    assert engine == {"model": "/models/ckpt", "tokenizer": "/models/ckpt", "enable_lora": False, "seed": 0,
                      "gpu_memory_utilization": GPU_MEMORY_UTILIZATION, "dtype": "float16"}
    [(sent, params, kwargs)] = rec.generate_calls
    assert sent == [{"prompt_token_ids": [288, 261, 223]}, {"prompt_token_ids": [5, 6, 7, 8, 9]}]
    assert params.fields == {"n": 3, "temperature": 0.7, "top_p": 0.9, "max_tokens": 17, "seed": 5,
                             "stop_token_ids": [2]}
    assert kwargs == {"use_tqdm": False, "lora_request": None}
    # n completions per prompt, in order; the left-out EOS appended and counted
    assert [[c.token_ids for c in cs] for cs in out] == [[[10, 11, 2], [11, 12, 2], [12, 13, 2]]] * 2
    assert [c.num_tokens for cs in out for c in cs] == [3] * 6
    assert gen.name == "vllm" and gen.tokenizer is tokenizer


def test_vllm_serves_in_bf16_unless_told_otherwise(monkeypatch, tokenizer):
    """harness saves fp32 checkpoints, which vLLM's dtype "auto" would serve in fp16."""
    rec = fake_vllm.install(monkeypatch, counting_script)
    VllmGenerator("/models/ckpt", tokenizer)
    assert rec.engines[0]["dtype"] == "bfloat16"


def test_greedy_is_temperature_zero_and_top_p_one(monkeypatch, tokenizer):
    rec = fake_vllm.install(monkeypatch, counting_script)
    VllmGenerator("m", tokenizer).generate([[5]], GenerationSpec(top_p=0.5, seed=3), progress=False)
    assert rec.generate_calls[0][1].fields == {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 128,
                                               "seed": 3, "stop_token_ids": [2]}


@pytest.mark.parametrize("rank, max_rank", [(4, 8), (16, 16), (17, 32)])
def test_lora_adapter_is_served_with_a_lora_request(monkeypatch, tokenizer, tmp_path, rank, max_rank):
    rec = fake_vllm.install(monkeypatch, counting_script)
    adapter = tmp_path / "my-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": rank, "base_model_name_or_path": "/base"}))
    gen = VllmGenerator("/base", tokenizer, str(adapter))
    gen.generate([[5, 6]], GenerationSpec(), progress=False)
    [engine] = rec.engines
    assert engine["enable_lora"] is True and engine["max_lora_rank"] == max_rank
    assert rec.lora_requests == [("my-adapter", 1, str(adapter))]
    assert rec.generate_calls[0][2]["lora_request"].args == ("my-adapter", 1, str(adapter))


def test_lora_rank_beyond_vllm_is_a_clear_error(monkeypatch, tokenizer, tmp_path):
    fake_vllm.install(monkeypatch, counting_script)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 1024}))
    with pytest.raises(HarnessError, match="vLLM serves adapters up to rank 512"):
        VllmGenerator("/base", tokenizer, str(tmp_path))


# ---------------------------------------------------------------- EOS counting


def test_eos_handling_matches_the_transformers_rows(monkeypatch, tokenizer):
    """The transformers path gives rows padded after EOS; vLLM gives ids with or without the EOS it
    stopped on, or cut by length.  Both must yield the same Completion."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    cases = {  # prompt -> (transformers row, vLLM's CompletionOutput fields)
        (1,): ([30, 31, eos, pad, pad], ([30, 31], "stop", None)),     # vLLM left the EOS out
        (2,): ([30, 31, eos, pad, pad], ([30, 31, eos], "stop", eos)),  # stopped by stop_token_ids, kept
        (3,): ([30, 31, 32, 33, 34], ([30, 31, 32, 33, 34], "length", None)),
        (4,): ([eos, pad, pad, pad, pad], ([], "stop", None)),          # EOS first: one token
    }
    fake_vllm.install(monkeypatch, lambda p, k, params: cases[tuple(p)][1])
    got = VllmGenerator("m", tokenizer).generate([list(p) for p in cases], GenerationSpec(), progress=False)
    want = [_completion(row, tokenizer, eos, pad) for row, _ in cases.values()]
    assert [c for [c] in got] == want
    assert [c.num_tokens for c in want] == [3, 3, 5, 1]


def test_vllm_and_transformers_count_the_same_on_a_real_model(monkeypatch, tokenizer):
    """Greedy transformers generation on a tiny Llama, with EOS set to a token it emits early; a fake
    vLLM that returns the same ids (minus the EOS, as vLLM may) gives identical completions."""
    model, tok = tiny_model(len(tokenizer)), build_tokenizer()
    prompts = [[288, 261, 223, 19], [5, 6, 7], [40, 41, 42, 43, 44]]
    settings = GenerationSpec(max_new_tokens=6)
    first = TransformersGenerator(model, tok).generate(prompts, settings, progress=False)
    tok.eos_token = tok.convert_ids_to_tokens(first[0][0].token_ids[2])  # prompt 0 now stops at its 3rd token
    want = TransformersGenerator(model, tok).generate(prompts, settings, progress=False)
    assert any(c.token_ids[-1] == tok.eos_token_id for [c] in want)
    assert any(c.num_tokens < 6 for [c] in want)

    def script(p, k, params):
        [c] = want[prompts.index(p)]
        if c.token_ids and c.token_ids[-1] == tok.eos_token_id:
            return c.token_ids[:-1], "stop", None
        return c.token_ids, "length", None

    fake_vllm.install(monkeypatch, script)
    assert VllmGenerator("m", tok).generate(prompts, settings, progress=False) == want


# ---------------------------------------------------------------- closing


def test_close_shuts_the_engine_and_frees_gpu_memory(monkeypatch, tokenizer, cuda):
    rec = fake_vllm.install(monkeypatch, counting_script)
    with VllmGenerator("m", tokenizer) as gen:
        assert gen.llm is not None
    assert gen.llm is None
    assert rec.cleanups == ["shutdown", "destroy_model_parallel", "destroy_distributed_environment"]
    assert cuda == ["empty_cache"]
    gen.close()  # a second close does nothing
    assert len(rec.cleanups) == 3 and cuda == ["empty_cache"]


def test_close_without_the_distributed_cleanup_of_older_vllm(monkeypatch, tokenizer):
    rec = fake_vllm.install(monkeypatch, counting_script)
    monkeypatch.delitem(sys.modules, "vllm.distributed.parallel_state")
    monkeypatch.setitem(sys.modules, "vllm.distributed.parallel_state", None)  # import fails
    gen = VllmGenerator("m", tokenizer)
    gen.close()
    assert gen.llm is None and rec.cleanups == ["shutdown"]


def test_transformers_generator_is_the_generate_function(tokenizer):
    model = tiny_model(len(tokenizer))
    with TransformersGenerator(model, tokenizer, batch_size=1) as gen:
        out = gen.generate([[5, 6, 7], [8]], GenerationSpec(max_new_tokens=3), progress=False)
        assert gen.name == "transformers"
    assert gen.model is None
    assert [len(cs) for cs in out] == [1, 1]
    assert all(1 <= c.num_tokens <= 3 for [c] in out)


# ---------------------------------------------------------------- choosing the backend


def test_auto_is_transformers_without_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed, even where it is
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_backend("auto") == "transformers"
    assert resolve_backend("transformers") == "transformers"


def test_auto_is_transformers_on_cpu_even_with_vllm(monkeypatch):
    fake_vllm.install(monkeypatch, counting_script)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_backend("auto") == "transformers"


def test_auto_is_vllm_with_vllm_and_cuda(monkeypatch, cuda):
    fake_vllm.install(monkeypatch, counting_script)
    assert resolve_backend("auto") == "vllm"
    assert resolved(GenerationSpec(seed=4)) == GenerationSpec(seed=4, backend="vllm")


def test_explicit_vllm_not_installed_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(HarnessError) as err:
        resolve_backend("vllm")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("eval.generation.backend: vllm is not installed")
    assert "pip install -e '.[vllm]'" in message and "eval.generation.backend=transformers" in message


def test_explicit_vllm_without_cuda_is_a_one_line_error(monkeypatch):
    fake_vllm.install(monkeypatch, counting_script)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HarnessError) as err:
        resolve_backend("vllm")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("eval.generation.backend: vllm needs a CUDA GPU")
    assert "eval.generation.backend=transformers" in message


def test_open_generator_transformers_uses_the_model_given(monkeypatch, tokenizer):
    monkeypatch.setitem(sys.modules, "vllm", None)
    model = tiny_model(len(tokenizer))
    with open_generator(GenerationSpec(), "/not/loaded", tokenizer, model) as gen:
        assert isinstance(gen, TransformersGenerator) and gen.model is model and gen.tokenizer is tokenizer


def test_open_generator_vllm_serves_the_path_with_the_settings_seed(monkeypatch, tokenizer, cuda):
    rec = fake_vllm.install(monkeypatch, counting_script)
    with open_generator(GenerationSpec(seed=9), "/ckpt", tokenizer, model=object()) as gen:
        assert isinstance(gen, VllmGenerator)
    assert rec.engines[0]["model"] == "/ckpt" and rec.engines[0]["seed"] == 9
    assert rec.cleanups[0] == "shutdown"
    with open_generator("vllm", "/ckpt", tokenizer):
        pass
    assert rec.engines[1]["seed"] == 0


# ---------------------------------------------------------------- provenance


def test_outputs_rows_record_the_backend_that_ran(monkeypatch, tokenizer, cuda):
    fake_vllm.install(monkeypatch, counting_script)
    items = [{"id": "a", "prompt": "What is 1+1?", "instruction": "What is 1+1?"}]
    settings = GenerationSpec(max_new_tokens=5)  # backend auto: rows must not say "auto"
    with open_generator(settings, "/ckpt", tokenizer) as gen:
        rows, samples = generate_outputs(items, gen, settings, "trial-1", progress=False)
    [row] = rows
    assert row["generation"] == {**settings.model_dump(), "backend": "vllm"}
    assert row["generator"] == "trial-1" and row["num_tokens"] == 3
    assert samples == [[(encode_prompt(tokenizer, "What is 1+1?", None), [10, 11, 2])]]
