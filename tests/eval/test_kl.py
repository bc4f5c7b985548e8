"""The sampled KL on generated outputs against an independent float64 computation."""

from __future__ import annotations

import copy

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.eval.kl import response_logps, sampled_kl

PAD = 0


def tiny_model(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=PAD)
    return LlamaForCausalLM(config).eval()


def numpy_logp(model, prompt: list[int], response: list[int]) -> float:
    """Sum of log-softmax(logits)[next token] over the response, one unpadded sequence, float64."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double().numpy()
    logsm = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    seq = prompt + response
    return float(sum(logsm[t - 1, seq[t]] for t in range(len(prompt), len(seq))))


SAMPLES = [
    [([5, 6, 7], [8, 9])],
    [([5, 6], [10, 11, 12, 13])],                      # different lengths: padding must not matter
    [([3], [4]), ([3, 4, 20, 21], [22, 23, 24])],      # a two-turn sample: its segments add up
]


def test_response_logps_match_unpadded_float64():
    model = tiny_model(0)
    flat = [seg for sample in SAMPLES for seg in sample]
    got = response_logps(model, flat, PAD).numpy()
    want = [numpy_logp(model, p, r) for p, r in flat]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_sampled_kl_is_mean_per_sample_log_ratio():
    policy, reference = tiny_model(0), tiny_model(1)
    with torch.no_grad():  # sharpen both (random init is near-uniform), so their log-probs differ clearly
        policy.lm_head.weight.mul_(40)
        reference.lm_head.weight.mul_(40)
    want = np.mean([sum(numpy_logp(policy, p, r) - numpy_logp(reference, p, r) for p, r in sample)
                    for sample in SAMPLES])
    assert abs(want) > 0.5
    assert abs(sampled_kl(policy, reference, SAMPLES, PAD) - want) < 1e-4 * max(1.0, abs(want))


def test_sampled_kl_of_a_model_to_itself_is_zero():
    policy = tiny_model(0)
    assert sampled_kl(policy, copy.deepcopy(policy), SAMPLES, PAD) == 0.0
    assert sampled_kl(policy, policy, [], PAD) == 0.0
