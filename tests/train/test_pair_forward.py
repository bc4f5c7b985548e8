"""train.pair_forward: shared-prompt pair rows give the padded forward pass's log-probs and gradients.

The padded layout (``collate_pairs``: ``[chosen; rejected]`` rows padded to the longest) is the
plain forward pass; shared_prompt runs each pair once as ``[prompt, chosen, rejected]`` with the
rejected tokens blocked from the chosen ones, pairs packed into rows.  In float64 with sdpa
attention both must agree to rounding: per-example sums, means and counts, the losses, the
metrics and the parameter gradients.

transformers' ``LlamaRMSNorm`` computes in float32 even in a float64 model, so its backward rounds
every position's gradient to float32: the shared prompt sums its chosen and rejected gradients
before that rounding, the padded rows after it, and the two differ by ~1e-7 relative (measured).
The gradient tests therefore run the norm in the model's dtype (``float64_norms``), which brings
the difference to ~1e-15.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from harness.data.load import load_rows, take_fraction
from harness.data.tokenization import EncodedPair, encode_pairs
from harness.errors import HarnessError
from harness.methods import reduce_logps
from harness.methods.registry import METHODS
from harness.toy import toy_model_path
from harness.train.forward import pair_layout, pair_logps, reference_stats
from harness.train.inputs import BatchInputs
from harness.train.kinds import forward_method
from harness.train.models import attach_lora, load_model, load_tokenizer

TIGHT = {"rtol": 1e-10, "atol": 1e-10}


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    path = str(toy_model_path("micro", tmp_path_factory.mktemp("cache")))
    tok = load_tokenizer(path)
    rows = take_fraction(load_rows("toy://arith-pairs", "pairs"), 0.005, 0)[:6]
    pairs = encode_pairs(tok, rows, 64)[0]
    # Ragged by construction: a 3-token prompt with a 1-token chosen response, a 1-token rejected one,
    # and a long rejected response (the row's longest segment).
    pairs += [EncodedPair(pairs[0].prompt_ids[:3], pairs[1].chosen_ids[:1], pairs[1].rejected_ids),
              EncodedPair(pairs[2].prompt_ids[-5:], pairs[2].chosen_ids, pairs[3].rejected_ids[:1]),
              EncodedPair(pairs[4].prompt_ids[:9], pairs[4].chosen_ids, pairs[4].rejected_ids * 3)]
    return path, tok, pairs


@pytest.fixture
def float64_norms(monkeypatch):
    from transformers.models.llama import modeling_llama

    def forward(self, hidden):
        return self.weight * (hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", forward)


def _model(path, lora: bool):
    torch.manual_seed(0)
    model = load_model(path, torch.float64)
    if lora:
        model = attach_lora(model, 4, 8.0, 0.0, "all-linear")
        with torch.no_grad():  # a fresh adapter is a no-op (B = 0): give it weight so it matters
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    return model.eval()


@pytest.mark.parametrize("lora", [False, True])
def test_per_example_logps_equal_padded(micro, lora):
    """Sum and mean log-probs and token counts of chosen and rejected, every pair, float64."""
    path, tok, pairs = micro
    model = _model(path, lora)
    with torch.no_grad():
        padded = pair_logps(model, pairs, tok.pad_token_id, "cpu", "padded")
        shared = pair_logps(model, pairs, tok.pad_token_id, "cpu", "shared_prompt")
    assert torch.equal(padded.counts, shared.counts)
    assert padded.counts.min() == 1
    for reduction in ("sum", "mean"):
        torch.testing.assert_close(reduce_logps(shared.sums, shared.counts, reduction),
                                   reduce_logps(padded.sums, padded.counts, reduction), **TIGHT)
    torch.testing.assert_close(shared.token_logps * shared.mask, padded.token_logps * padded.mask, **TIGHT)
    torch.testing.assert_close(shared.entropy(), padded.entropy(), rtol=1e-6, atol=0)  # float32 metric
    assert shared.tokens == padded.tokens  # tokens_seen counts the pairs' tokens in both layouts
    prompts = sum(len(p.prompt_ids) for p in pairs)
    assert shared.computed_tokens - shared.pad_tokens == padded.computed_tokens - padded.pad_tokens - prompts
    assert shared.pad_tokens < padded.pad_tokens


def test_rejected_does_not_see_chosen(micro):
    """Changing a chosen response leaves the rejected log-probs of the shared rows unchanged."""
    path, tok, pairs = micro
    model = _model(path, False)
    other = [EncodedPair(p.prompt_ids, list(reversed(p.chosen_ids)), p.rejected_ids) for p in pairs]
    with torch.no_grad():
        a = pair_logps(model, pairs, tok.pad_token_id, "cpu", "shared_prompt")
        b = pair_logps(model, other, tok.pad_token_id, "cpu", "shared_prompt")
    n = len(pairs)
    torch.testing.assert_close(a.sums[n:], b.sums[n:], **TIGHT)


@pytest.mark.parametrize(("name", "extra"), [("dpo", {}), ("ipo", {}), ("simpo", {}),
                                             ("orpo", {"nll_on_prompt": True}),
                                             ("dpo", {"logprob_reduction": "mean", "sft_weight": 0.5})])
@pytest.mark.parametrize("lora", [False, True])
def test_losses_metrics_and_gradients_equal_padded(micro, name, extra, lora, float64_norms):
    """A backward pass through each loss gives the same per-example losses, metrics and grads."""
    path, tok, pairs = micro
    method = METHODS[name]
    ref = None
    if method.needs_ref:
        ref = -torch.rand(len(pairs), 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 20
        ref[:, 1] = torch.tensor([len(p.chosen_ids) for p in pairs], dtype=torch.float64)
        ref[:, 3] = torch.tensor([len(p.rejected_ids) for p in pairs], dtype=torch.float64)
    results = {}
    for layout in ("padded", "shared_prompt"):
        model = _model(path, lora)
        params = {**method.params, **extra, "pair_forward": layout}
        losses, metrics, tokens = forward_method(model, method, params, pairs, tok.pad_token_id, "cpu",
                                                 BatchInputs(ref=ref), with_entropy=True)
        losses.sum().backward()
        grads = {k: p.grad for k, p in model.named_parameters() if p.requires_grad}
        results[layout] = losses.detach(), metrics, tokens, grads
    (loss_a, metrics_a, tokens_a, grads_a), (loss_b, metrics_b, tokens_b, grads_b) = results.values()
    torch.testing.assert_close(loss_b, loss_a, **TIGHT)
    assert tokens_a == tokens_b
    counted = {"computed_tokens_per_example", "pad_tokens_per_example"}
    assert set(metrics_a) == set(metrics_b) and counted <= set(metrics_a)
    for key in set(metrics_a) - counted:
        torch.testing.assert_close(torch.as_tensor(metrics_b[key], dtype=torch.float64),
                                   torch.as_tensor(metrics_a[key], dtype=torch.float64), rtol=1e-6, atol=1e-10)
    assert metrics_b["computed_tokens_per_example"] < metrics_a["computed_tokens_per_example"]
    assert grads_a.keys() == grads_b.keys()
    for key, grad in grads_a.items():
        torch.testing.assert_close(grads_b[key], grad, **TIGHT, msg=key)


def test_reference_stats_equal_padded(micro):
    """The reference pass (chunks of 4 pairs) gives the same [N, 4] statistics in both layouts."""
    path, tok, pairs = micro
    model = _model(path, False)
    padded = reference_stats(model, pairs, tok.pad_token_id, "cpu", 4, "padded")
    shared = reference_stats(model, pairs, tok.pad_token_id, "cpu", 4, "shared_prompt")
    torch.testing.assert_close(shared, padded, rtol=1e-6, atol=1e-5)  # stored as float32


def test_auto_falls_back_to_padded_without_a_4d_mask(micro):
    """auto is shared_prompt under sdpa and eager; other attention runs padded, and an explicit
    shared_prompt there is an error naming the key."""
    path, tok, pairs = micro
    model = _model(path, False)
    assert pair_layout(model, "auto") == "shared_prompt"
    flash = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    assert pair_layout(flash, "auto") == "padded"
    assert pair_layout(flash, "padded") == "padded"
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(HarnessError, match="train.pair_forward"):
        pair_logps(model, pairs, tok.pad_token_id, "cpu", "shared_prompt")


def test_kept_columns_by_hand():
    """Two rows of width 5; row 0's targets are predicted from columns 1 and 2, row 1's from column 3."""
    from harness.data.packing import identity_source, kept_columns

    source = identity_source(torch.Size([2, 5]))
    wanted = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1]])  # [B, T - 1]: column t predicts token t + 1
    keep, renumbered = kept_columns(source, wanted, 5)
    assert keep.tolist() == [1, 2, 3]
    assert renumbered[0, 1].tolist() == [0, 0] and renumbered[0, 2].tolist() == [0, 1]
    assert renumbered[1, 3].tolist() == [1, 2] and renumbered[1, 4].tolist() == [1, 0]  # not kept: some column
    every, same = kept_columns(source, torch.ones(2, 4, dtype=torch.long), 4)  # columns 0-3 of 4: all of them
    assert every is None and torch.equal(same, source)


@pytest.mark.parametrize("layout", ["padded", "shared_prompt"])
@pytest.mark.parametrize("lora", [False, True])
def test_logits_at_response_positions_only_equal_every_position(micro, layout, lora, float64_norms):
    """The LM head at the positions that predict a response token gives the every-position pass's sums,
    counts, response log-probs, entropy and parameter gradients, in float64."""
    path, tok, pairs = micro
    results = {}
    for every in (True, False):
        model = _model(path, lora)
        out = pair_logps(model, pairs, tok.pad_token_id, "cpu", layout, every_position=every)
        (out.sums.sum() + reduce_logps(out.sums, out.counts, "mean").sum()).backward()
        grads = {k: p.grad for k, p in model.named_parameters() if p.requires_grad}
        results[every] = out, grads
    (full, grads_full), (kept, grads_kept) = results[True], results[False]
    assert kept.logits.shape[1] < full.logits.shape[1]  # fewer columns ran through the LM head
    assert kept.logits.shape[0] == full.logits.shape[0] and kept.computed_tokens == full.computed_tokens
    assert torch.equal(kept.counts, full.counts)
    torch.testing.assert_close(kept.sums, full.sums, **TIGHT)
    torch.testing.assert_close(kept.token_logps * kept.mask, full.token_logps * full.mask, **TIGHT)
    torch.testing.assert_close(kept.entropy(), full.entropy(), rtol=1e-6, atol=0)
    for key, grad in grads_full.items():
        torch.testing.assert_close(grads_kept[key], grad, **TIGHT, msg=key)


def test_a_model_without_logits_to_keep_gets_every_position(micro):
    """A causal LM whose forward has no ``logits_to_keep`` runs the LM head everywhere, with the same sums."""
    path, tok, pairs = micro
    model = _model(path, False)

    class Plain(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=use_cache)

    with torch.no_grad():
        kept = pair_logps(model, pairs, tok.pad_token_id, "cpu", "shared_prompt")
        plain = pair_logps(Plain(model), pairs, tok.pad_token_id, "cpu", "shared_prompt")
    assert plain.logits.shape[1] == plain.computed_tokens // plain.logits.shape[0] > kept.logits.shape[1]
    torch.testing.assert_close(plain.sums, kept.sums, **TIGHT)
