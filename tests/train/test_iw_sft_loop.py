"""IW-SFT in the offline loop: weights self-normalized over the whole optimizer step."""

from __future__ import annotations

import pytest
import torch

from harness.data.load import load_rows, take_fraction
from harness.data.tokenization import encode_sft
from harness.methods.registry import METHODS
from harness.toy import toy_model_path
from harness.train.inputs import ExampleSet
from harness.train.loop import Callbacks, TrainConfig, train
from harness.train.models import load_model, load_tokenizer


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    path = str(toy_model_path("micro", tmp_path_factory.mktemp("cache")))
    tok = load_tokenizer(path)
    examples = encode_sft(tok, take_fraction(load_rows("toy://arith-sft", "sft"), 0.005, 0)[:8], 64)[0]
    return path, tok, examples


def _step(micro, batch_size, grad_accum, log_weights, normalization="token"):
    path, tok, examples = micro
    model = load_model(path, torch.float64)
    cfg = TrainConfig(lr=1e-2, batch_size=batch_size, grad_accum=grad_accum, max_steps=1, shuffle=False,
                      scheduler="constant", warmup_ratio=0.0, max_grad_norm=1e9)
    params = {**METHODS["iw-sft"].params, "loss_normalization": normalization}
    data = ExampleSet(examples, tok.pad_token_id, log_weights=log_weights)
    result = train(model, METHODS["iw-sft"], params, data, cfg, Callbacks(progress=False))
    return model, result.last_metrics


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_grad_accum_matches_one_big_batch(micro, normalization):
    """batch 8 x 1 and batch 3 x 3: uneven micro-batches (3, 3, 2), so per-micro-batch denominators
    or per-micro-batch weight normalization would give a different loss and update."""
    weights = torch.tensor([0.5, 2.0, 1.0, 4.0, 0.25, 1.5, 3.0, 0.75], dtype=torch.float64)
    assert len(micro[2]) == len(weights)
    model_a, m_a = _step(micro, 8, 1, weights.log(), normalization)
    model_b, m_b = _step(micro, 3, 3, weights.log(), normalization)
    assert m_a["loss"] == pytest.approx(m_b["loss"], rel=1e-9)
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_loss_is_the_self_normalized_weighted_token_mean(micro):
    """loss = sum_i (w_i / mean w) NLL_i / (step tokens), NLL_i the summed token NLL, computed independently."""
    path, _tok, examples = micro
    weights = torch.tensor([0.5, 2.0, 1.0, 4.0, 0.25, 1.5, 3.0, 0.75], dtype=torch.float64)
    _, metrics = _step(micro, 3, 3, weights.log())
    model = load_model(path, torch.float64)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for w, ex in zip(weights / weights.mean(), examples):
            ids = torch.tensor([ex.prompt_ids + ex.response_ids])
            logp = torch.log_softmax(model(ids).logits[0], -1)
            nll = -sum(float(logp[p - 1, ids[0, p]]) for p in range(len(ex.prompt_ids), ids.shape[1]))
            total += float(w) * nll
            tokens += len(ex.response_ids)
    assert metrics["loss"] == pytest.approx(total / tokens, rel=1e-9)
    # uniform weights are plain SFT
    _, uniform = _step(micro, 6, 1, torch.zeros(6, dtype=torch.float64))
    assert uniform["loss"] != pytest.approx(metrics["loss"], rel=1e-3)
