"""Model loading and adapting (harness.train.models): QLoRA's refusals and merge, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness.config.grid import ResolvedMethod, StageSpec
from harness.config.spec import DataSpec, EvalSpec, LoraSpec, TrainSpec
from harness.errors import HarnessError
from harness.methods.registry import METHODS
from harness.toy import toy_model_path
from harness.train.models import (
    attach_lora,
    enable_checkpointing,
    load_model,
    merged_into,
    quantization_config,
    training_dtype,
)
from harness.train.stages import check_hardware, policy_key


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return str(toy_model_path("micro", tmp_path_factory.mktemp("cache"), progress=False))


def stage(quantize: str = "none", precision: str = "auto") -> StageSpec:
    method = ResolvedMethod("dpo", dict(METHODS["dpo"].params))
    return StageSpec("main", method, DataSpec(train="toy://arith-pairs"), TrainSpec(precision=precision),
                     LoraSpec(rank=4, quantize=quantize), EvalSpec(), None)


def test_qlora_and_low_precision_are_refused_on_cpu_in_one_line():
    with pytest.raises(HarnessError) as err:
        quantization_config("nf4", on_gpu=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith("lora.quantize: 'nf4'") and "CUDA GPU" in message
    assert quantization_config("none", on_gpu=False) is None
    with pytest.raises(HarnessError, match="train.precision: 'bf16' needs a GPU"):
        training_dtype("bf16", on_gpu=False)
    if not torch.cuda.is_available():
        with pytest.raises(HarnessError, match="lora.quantize"):
            check_hardware(stage("nf4"))
        assert check_hardware(stage()) == (torch.float32, "no")


def test_a_4bit_policy_is_another_reference_than_its_source():
    assert policy_key(stage(), "dir:abc") == "dir:abc"
    assert policy_key(stage("nf4"), "dir:abc") == "dir:abc:nf4"


def test_qlora_merge_adds_the_adapter_to_the_unquantized_base(micro):
    """``merged_into`` rebuilds the adapter on a fresh fp32 base: the same weights as merging in place."""
    torch.manual_seed(0)
    lora = attach_lora(load_model(micro), rank=4, alpha=8.0, dropout=0.0, target_modules="all-linear")
    with torch.no_grad():  # a trained adapter: B is zero at initialization
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.05)
    rebuilt = merged_into(lora, micro)
    expected = lora.merge_and_unload()
    base = AutoModelForCausalLM.from_pretrained(micro)
    got, want, orig = rebuilt.state_dict(), expected.state_dict(), base.state_dict()
    assert got.keys() == want.keys()
    changed = [k for k in want if not torch.equal(want[k], orig[k])]
    assert len(changed) > 0  # the adapter moved the linear layers
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6)


def test_gradient_checkpointing_gives_lora_the_same_gradients(micro):
    """Non-reentrant checkpointing: with frozen embeddings, LoRA weights still get their gradients."""
    ids = torch.tensor([[5, 9, 13, 21, 34, 55, 89, 100]])
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = attach_lora(load_model(micro), rank=4, alpha=8.0, dropout=0.0, target_modules="all-linear")
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
        if checkpointing:
            enable_checkpointing(model)
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    plain, checkpointed = grads
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for name in plain:
        assert checkpointed[name].abs().sum() > 0 or plain[name].abs().sum() == 0
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7)
