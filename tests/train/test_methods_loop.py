"""Every wired method runs through the one offline loop; step normalization holds for each."""

from __future__ import annotations

import pytest
import torch

from harness.data.load import load_rows, take_fraction
from harness.data.tokenization import encode_pairs, encode_sft
from harness.methods import PairLogps, orpo_loss, sequence_logps, target_mask, token_logps
from harness.methods.registry import METHODS
from harness.toy import toy_model_path
from harness.train.inputs import BatchInputs
from harness.train.kinds import forward_method
from harness.train.models import load_model, load_tokenizer
from tests.train.test_loop import _one_step  # one optimizer step in float64, shared with the loop tests


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    path = toy_model_path("micro", tmp_path_factory.mktemp("cache"))
    return str(path), load_tokenizer(str(path))


def _examples(tokenizer, kind, n):
    uri = "toy://arith-sft" if kind == "sft" else "toy://arith-pairs"
    rows = take_fraction(load_rows(uri, kind), 0.005, 0)[:n]
    return (encode_sft if kind == "sft" else encode_pairs)(tokenizer, rows, 64)[0]


def _fake_ref(examples):
    ref = -torch.rand(len(examples), 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 20
    ref[:, 1] = torch.tensor([len(e.chosen_ids) for e in examples], dtype=torch.float64)
    ref[:, 3] = torch.tensor([len(e.rejected_ids) for e in examples], dtype=torch.float64)
    return ref


PAIR_METHODS = ["robust", "ipo", "hinge", "simpo", "orpo"]
SFT_METHODS = ["dft", "hellinger-sft", "brier-sft"]


@pytest.mark.parametrize("name", PAIR_METHODS + SFT_METHODS)
def test_grad_accum_matches_one_big_batch(micro, name):
    """batch 8 x accumulation 1 and batch 3 x accumulation 3 give the same loss and update.

    The micro-batches are uneven (3, 3, 2): a per-micro-batch mean averaged over the
    micro-batches would weight the last two examples 1/6 instead of 1/8, so only the
    step-wide denominator (``step_denominator``) passes.
    """
    path, tok = micro
    kind = METHODS[name].batch.row_kind
    examples = _examples(tok, kind, 8)
    assert len(examples) == 8
    ref = _fake_ref(examples) if METHODS[name].needs_ref else None
    params = dict(METHODS[name].params)
    if name == "robust":
        params["label_smoothing"] = 0.2
    if name == "hinge":
        params["beta"] = 0.01  # keep every pair inside the hinge (z < 1) so the step has a gradient
    model_a, result_a = _one_step(path, tok, name, params, examples, 8, 1, ref)
    model_b, result_b = _one_step(path, tok, name, params, examples, 3, 3, ref)
    assert result_a.last_metrics["loss"] == pytest.approx(result_b.last_metrics["loss"], rel=1e-9)
    moved = False
    start = load_model(path, torch.float64)
    for a, b, s in zip(model_a.parameters(), model_b.parameters(), start.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
        moved |= not torch.equal(a, s)
    assert moved


def test_orpo_forward_nll_span(micro):
    """ORPO's NLL covers the response by default and every token after the first with nll_on_prompt."""
    path, tok = micro
    examples = _examples(tok, "pairs", 3)
    model = load_model(path, torch.float64).eval()
    from harness.data.collate import collate_pairs

    batch = collate_pairs(examples, tok.pad_token_id)
    with torch.no_grad():
        tlp = token_logps(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                          batch["input_ids"])
    resp = target_mask(batch["loss_mask"])
    logps = sequence_logps(tlp, resp, "mean")
    for on_prompt, span in ((False, resp), (True, target_mask(batch["attention_mask"]))):
        params = {**METHODS["orpo"].params, "nll_on_prompt": on_prompt}
        with torch.no_grad():
            got, _metrics, _ = forward_method(model, METHODS["orpo"], params, examples, tok.pad_token_id, "cpu")
        nll = -sequence_logps(tlp[:3], span[:3], "mean")
        expected, _ = orpo_loss(PairLogps(logps[:3], logps[3:], nll_chosen=nll, nll_chosen_with_prompt=nll),
                                beta=params["beta"], nll_on_prompt=on_prompt)
        torch.testing.assert_close(got, expected)
    assert span.sum() > resp.sum()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_explicit_reduction_is_honoured(micro, reduction):
    """ipo's default is mean; an explicit sum changes its loss to the summed-log-prob variant."""
    path, tok = micro
    examples = _examples(tok, "pairs", 2)
    ref = _fake_ref(examples)
    model = load_model(path, torch.float64).eval()
    params = {**METHODS["ipo"].params, "logprob_reduction": reduction}
    with torch.no_grad():
        got, metrics, _ = forward_method(model, METHODS["ipo"], params, examples, tok.pad_token_id, "cpu",
                                         BatchInputs(ref=ref))
    from harness.methods import ipo_loss, reduce_logps
    from harness.train.forward import pair_logps

    with torch.no_grad():
        out = pair_logps(model, examples, tok.pad_token_id, "cpu")
    lp = reduce_logps(out.sums, out.counts, reduction)
    expected, _ = ipo_loss(PairLogps(lp[:2], lp[2:], reduce_logps(ref[:, 0], ref[:, 1], reduction),
                                     reduce_logps(ref[:, 2], ref[:, 3], reduction)), beta=params["beta"])
    torch.testing.assert_close(got, expected)
    assert "kl" in metrics
