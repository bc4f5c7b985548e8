"""Reward models: harness's pooled scalar head equals transformers' own sequence-classification forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.data.load import load_rows, take_fraction
from harness.data.tokenization import encode_pairs
from harness.methods.registry import METHODS
from harness.toy import toy_model_path
from harness.train.inputs import BatchInputs
from harness.train.kinds import forward_method
from harness.train.models import attach_lora, load_tokenizer
from harness.train.reward_model import load_reward_model, score_responses


@pytest.fixture(scope="module")
def rm_world(tmp_path_factory):
    path = str(toy_model_path("micro", tmp_path_factory.mktemp("cache")))
    tok = load_tokenizer(path)
    torch.manual_seed(0)
    model = load_reward_model(path, tok.pad_token_id, torch.float64, "last").eval()
    pairs = encode_pairs(tok, take_fraction(load_rows("toy://arith-pairs", "pairs"), 0.003, 0)[:4], 64)[0]
    return path, tok, model, pairs


def _hf_reward(model, ids) -> float:
    """transformers' own pooling: the score at the last non-pad token of an unpadded sequence."""
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


def test_rm_loss_matches_transformers_forward(rm_world):
    """Per pair: -log sigma(r_c - r_r - m) + c (r_c + r_r)^2 with r from the HF model, one sequence at a time."""
    _, tok, model, pairs = rm_world
    margin = torch.tensor([0.0, 0.5, -0.25, 1.0], dtype=torch.float64)
    params = {"pooling": "last", "center_rewards_coefficient": 0.1}
    with torch.no_grad():
        got, metrics, _ = forward_method(model, METHODS["rm"], params, pairs, tok.pad_token_id, "cpu",
                                         BatchInputs(margins=margin))
    rc = torch.tensor([_hf_reward(model, p.prompt_ids + p.chosen_ids) for p in pairs], dtype=torch.float64)
    rr = torch.tensor([_hf_reward(model, p.prompt_ids + p.rejected_ids) for p in pairs], dtype=torch.float64)
    expected = -F.logsigmoid(rc - rr - margin) + 0.1 * (rc + rr) ** 2
    torch.testing.assert_close(got.double(), expected, rtol=1e-9, atol=1e-12)
    assert metrics["rewards/accuracy"].item() == pytest.approx(float((rc > rr).double().mean()))
    assert abs(float(rc.std())) > 1e-4  # the random head gives distinct rewards


def test_mean_pooling_and_scoring_follow_the_saved_pooling(rm_world, tmp_path):
    """A saved RM keeps its pooling: score_responses after reload uses ``harness_pooling``."""
    _path, tok, model, pairs = rm_world
    model.config.harness_pooling = "mean"
    model.save_pretrained(tmp_path / "rm")
    reloaded = load_reward_model(str(tmp_path / "rm"), tok.pad_token_id, torch.float64).eval()
    pair = pairs[0]
    got = score_responses(reloaded, [pair.prompt_ids], [pair.chosen_ids], tok.pad_token_id, "cpu")
    with torch.no_grad():
        hidden = reloaded.base_model(input_ids=torch.tensor([pair.prompt_ids + pair.chosen_ids])).last_hidden_state
        values = reloaded.score(hidden)[0, :, 0]
    expected = values[len(pair.prompt_ids):].mean()
    assert float(got[0]) == pytest.approx(float(expected), rel=1e-9)
    model.config.harness_pooling = "last"


def test_rm_loss_and_gradient_under_lora(rm_world):
    """An rm micro-batch through a LoRA-wrapped RM (peft's SEQ_CLS wrapper, lora.rank 4).

    The expected rewards come from peft's own forward (the pooled classifier output of the
    adapted model), one unpadded sequence at a time; the adapter's B matrices are made
    non-zero first, so the adapted model really differs from the base.  The loss then
    back-propagates into the adapter and the trained copy of the head.
    """
    path, tok, _, pairs = rm_world
    torch.manual_seed(0)
    base = load_reward_model(path, tok.pad_token_id, torch.float64, "last")
    plain_reward = _hf_reward(base.eval(), pairs[0].prompt_ids + pairs[0].chosen_ids)
    model = attach_lora(base, 4, None, 0.0, "all-linear", "SEQ_CLS").eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    params = {"pooling": "last", "center_rewards_coefficient": 0.0}
    got, _, _ = forward_method(model, METHODS["rm"], params, pairs, tok.pad_token_id, "cpu")
    rc = torch.tensor([_hf_reward(model, p.prompt_ids + p.chosen_ids) for p in pairs], dtype=torch.float64)
    rr = torch.tensor([_hf_reward(model, p.prompt_ids + p.rejected_ids) for p in pairs], dtype=torch.float64)
    torch.testing.assert_close(got.detach().double(), -F.logsigmoid(rc - rr), rtol=1e-9, atol=1e-12)
    assert abs(float(rc[0]) - plain_reward) > 1e-4  # the adapter changes the rewards
    got.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in grads) and any("score" in n for n in grads)
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads.values())
