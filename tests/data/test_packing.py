"""train.packing: examples packed into rows with a block-diagonal mask compute the same losses."""

from __future__ import annotations

import pytest
import torch

from harness.data.load import load_rows, take_fraction
from harness.data.packing import block_causal_mask, mask_for, pack, pack_pairs, pack_rows, shared_prompt_mask
from harness.data.tokenization import Encoded, EncodedPair, encode_sft
from harness.errors import HarnessError
from harness.methods.registry import METHODS
from harness.toy import toy_model_path
from harness.train.inputs import ExampleSet
from harness.train.kinds import forward_method
from harness.train.loop import Callbacks, TrainConfig, train
from harness.train.models import load_model, load_tokenizer


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    path = str(toy_model_path("micro", tmp_path_factory.mktemp("cache")))
    tok = load_tokenizer(path)
    rows = take_fraction(load_rows("toy://arith-sft", "sft"), 0.005, 0)[:6]
    examples = encode_sft(tok, rows, 64)[0] + [Encoded([5], [6, 7, 8, 9, 10, 11, 12, 13], response_mask=[1, 1, 0, 0, 1, 1, 1, 1])]
    return path, tok, examples


def test_first_fit_decreasing_by_hand():
    """Lengths 5, 3, 4, 2 into rows of 7: 5 -> row 0; 4 -> row 1; 3 -> row 1 (4+3); 2 -> row 0 (5+2)."""
    assert pack_rows([5, 3, 4, 2], 7) == [[0, 3], [2, 1]]
    with pytest.raises(ValueError, match="exceeds"):
        pack_rows([8], 7)


def test_pack_layout_and_block_mask():
    ids = torch.tensor([[1, 2, 3], [4, 5, 0], [6, 0, 0]])
    packed = pack(ids, [3, 2, 1], capacity=4, pad_id=0)
    assert packed["input_ids"].tolist() == [[1, 2, 3, 6], [4, 5, 0, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0], [0, 1, 0, 0]]
    assert packed["segments"].tolist() == [[0, 0, 0, 1], [0, 0, -1, -1]]
    assert packed["source"][2, 0].tolist() == [0, 3] and packed["source"][1, 1].tolist() == [1, 1]
    allowed = block_causal_mask(packed["segments"])[:, 0].int().tolist()
    assert allowed[0] == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]]
    assert allowed[1] == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]  # padding sees itself only


def test_pack_pairs_layout_and_shared_prompt_mask():
    """Pairs (prompt, chosen, rejected) of lengths (2, 1, 2) and (1, 1, 1): segments of 5 and 3 tokens,
    one row each (capacity = the longest pair, 5); rejected positions restart at the prompt's end."""
    pairs = [EncodedPair([1, 2], [3], [4, 5]), EncodedPair([6], [7], [8])]
    packed = pack_pairs(pairs, pad_id=0)
    assert packed["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 2, 3], [0, 1, 1, 0, 0]]
    assert packed["parts"].tolist() == [[0, 0, 1, 2, 2], [0, 1, 2, -1, -1]]
    # The collate_pairs layout [prompt+chosen x2; prompt+rejected x2], width 4: where each position ran.
    assert packed["source"][0, :3].tolist() == [[0, 0], [0, 1], [0, 2]]
    assert packed["source"][2, :4].tolist() == [[0, 0], [0, 1], [0, 3], [0, 4]]
    assert packed["source"][3, :2].tolist() == [[1, 0], [1, 2]]
    allowed = shared_prompt_mask(packed["segments"], packed["parts"])[:, 0].int().tolist()
    assert allowed[0] == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 1, 0], [1, 1, 0, 1, 1]]
    assert allowed[1][2] == [1, 0, 1, 0, 0]  # the rejected token sees its prompt and itself, not the chosen


@pytest.mark.parametrize(("implementation", "tolerance"), [("sdpa", 1e-10), ("eager", 1e-6)])
def test_per_example_losses_with_packing_equal_those_without(micro, implementation, tolerance):
    """float64; eager attention computes its softmax in float32, hence its looser tolerance."""
    path, tok, examples = micro
    model = load_model(path, torch.float64)
    model.set_attn_implementation(implementation)
    model.eval()
    sft = METHODS["sft"]
    for normalization in ("token", "sequence"):
        params = {**sft.params, "loss_normalization": normalization}
        plain, _, _ = forward_method(model, sft, params, examples, tok.pad_token_id, "cpu")
        packed, _, _ = forward_method(model, sft, {**params, "packing_capacity": 64}, examples, tok.pad_token_id,
                                      "cpu")
        assert plain.shape == packed.shape == (len(examples),)
        torch.testing.assert_close(packed, plain, rtol=tolerance, atol=tolerance)
    # The examples really share rows: 7 examples in fewer than 7 rows.
    lengths = [len(e.prompt_ids) + len(e.response_ids) for e in examples]
    assert len(pack_rows(lengths, 64)) < len(examples)


def test_position_ids_alone_do_not_isolate_examples(micro):
    """Why the explicit mask: without it, the second example of a row attends to the first."""
    path, _, examples = micro
    model = load_model(path, torch.float64).eval()
    a, b = (torch.tensor([e.prompt_ids + e.response_ids]) for e in examples[:2])
    with torch.no_grad():
        alone = model(input_ids=b).logits[0]
        ids = torch.cat([a, b], 1)
        positions = torch.cat([torch.arange(a.shape[1]), torch.arange(b.shape[1])])[None]
        leaky = model(input_ids=ids, position_ids=positions).logits[0, a.shape[1]:]


    assert (leaky - alone).abs().max() > 1e-3


def test_packed_training_step_equals_unpacked(micro):
    path, tok, examples = micro
    cfg = TrainConfig(lr=1e-2, batch_size=4, grad_accum=2, max_steps=1, shuffle=False, scheduler="constant",
                      warmup_ratio=0.0, max_grad_norm=1e9)
    models = []
    for params in (METHODS["sft"].params, {**METHODS["sft"].params, "packing_capacity": 64}):
        model = load_model(path, torch.float64)
        result = train(model, METHODS["sft"], params, ExampleSet(examples, tok.pad_token_id), cfg,
                       Callbacks(progress=False))
        models.append((model, result.last_metrics["loss"]))
    (a, loss_a), (b, loss_b) = models
    assert loss_a == pytest.approx(loss_b, rel=1e-9)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-9, atol=1e-10)


def test_unchecked_attention_is_refused(micro):
    path, _, _ = micro
    model = load_model(path)
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(HarnessError, match="train.packing: checked for sdpa and eager"):
        mask_for(model, torch.ones(1, 1, 2, 2, dtype=torch.bool), torch.float32)

