"""KTO through the one offline loop: the step-wide KL estimate, batch of 1, odd sizes, b x k == k*b x 1."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from harness.methods import KtoLogps, kto_loss
from harness.methods.registry import METHODS
from harness.toy import toy_model_path
from harness.train.forward import kl_pair_logps, kto_step_inputs
from harness.train.inputs import ExampleSet, StepState
from harness.train.loop import Callbacks, TrainConfig, train
from harness.train.models import load_model, load_tokenizer
from harness.train.reference import plan_kl_pairs


@dataclass
class KTORow:  # the fields of harness.data.tokenization.EncodedKTO the loop reads
    prompt_ids: list
    completion_ids: list
    label: bool


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = str(toy_model_path("micro", tmp_path_factory.mktemp("cache")))
    tok = load_tokenizer(path)
    rows = []
    for a, b, good in [(1, 2, True), (13, 4, False), (22, 35, True), (7, 8, False), (40, 9, True), (3, 3, False),
                       (8, 1, True)]:
        prompt = tok(f"Q: {a}+{b}=")["input_ids"]
        answer = a + b if good else a + b + 1
        rows.append(KTORow(prompt, tok(f" {answer}")["input_ids"] + [tok.eos_token_id], good))
    ref_model = load_model(path, torch.float64)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in ref_model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    own = kl_pair_logps(ref_model, rows, [(i, i) for i in range(len(rows))], tok.pad_token_id, "cpu")
    return path, tok, rows, ref_model, own


def _cfg(batch_size, grad_accum, max_steps=1):
    return TrainConfig(lr=1e-2, batch_size=batch_size, grad_accum=grad_accum, max_steps=max_steps, shuffle=False,
                       scheduler="constant", warmup_ratio=0.0, max_grad_norm=1e9, log_every=1)


def _run(setup, n, batch_size, grad_accum, max_steps=1):
    path, tok, rows, ref_model, own = setup
    rows = rows[:n]
    cfg = _cfg(batch_size, grad_accum, max_steps)
    pairs = plan_kl_pairs(n, cfg)
    kl_ref = dict(zip(pairs, kl_pair_logps(ref_model, rows, pairs, tok.pad_token_id, "cpu").tolist()))
    model = load_model(path, torch.float64)
    logged = []
    params = dict(METHODS["kto"].params)
    train(model, METHODS["kto"], params, ExampleSet(rows, tok.pad_token_id, ref=own[:n], kl_ref=kl_ref), cfg,
          Callbacks(log=lambda m, s: logged.append(m), progress=False))
    return model, logged


def test_step_kl_is_the_mismatched_mean_and_loss_matches_an_independent_computation(setup):
    """Odd step of 5: z0 = max(0, mean_k [log pi(y_{k+1} | x_k) - log pi_ref(y_{k+1} | x_k)]), then kto_loss."""
    path, tok, rows, ref_model, own = setup
    _, logged = _run(setup, 5, 5, 1)
    policy = load_model(path, torch.float64).eval()
    pairs = [(k, (k + 1) % 5) for k in range(5)]
    with torch.no_grad():
        gap = (kl_pair_logps(policy, rows, pairs, tok.pad_token_id, "cpu")[:, 0]
               - kl_pair_logps(ref_model, rows, pairs, tok.pad_token_id, "cpu")[:, 0])
        z0 = max(0.0, float(gap.mean()))
        mine = kl_pair_logps(policy, rows, [(i, i) for i in range(5)], tok.pad_token_id, "cpu")[:, 0]
    expected, _ = kto_loss(KtoLogps(mine, own[:5, 0], torch.tensor([r.label for r in rows[:5]]), z0), beta=0.1)
    assert logged[0]["train/kl"] == pytest.approx(z0, rel=1e-9, abs=1e-12)
    assert logged[0]["train/loss"] == pytest.approx(float(expected.mean()), rel=1e-9)
    assert abs(float(gap.mean())) > 1e-3  # the estimate is not trivially 0


def test_batch_of_one_uses_the_running_mean(setup):
    """Steps of one example: no mismatched pair, so z0 is the mean of earlier estimates, 0 at the start."""
    state = StepState()
    path, tok, rows, _, _ = setup
    model = load_model(path, torch.float64)
    data = ExampleSet(rows, tok.pad_token_id, kl_ref={})
    first = kto_step_inputs(model, METHODS["kto"], METHODS["kto"].params, data, [0], state, "cpu")
    assert first.kl == 0.0
    state.kl_history[:] = [0.2, 0.6]
    later = kto_step_inputs(model, METHODS["kto"], METHODS["kto"].params, data, [3], state, "cpu")
    assert later.kl == pytest.approx(0.4)
    _, logged = _run(setup, 3, 1, 1, max_steps=3)
    assert [m["train/kl"] for m in logged] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(("big", "small"), [((5, 1), (2, 3)), ((7, 1), (3, 3))])
def test_grad_accum_matches_one_big_batch(setup, big, small):
    """The KL estimate spans the step's whole batch: b x k gives the k*b x 1 update.

    The micro-batches are uneven (5 = 2 + 2 + 1, 7 = 3 + 3 + 1), so a per-micro-batch
    denominator (or KL estimate) would weight the examples differently and fail.
    """
    n = big[0]
    model_a, log_a = _run(setup, n, *big)
    model_b, log_b = _run(setup, n, *small)
    assert log_a[0]["train/kl"] == pytest.approx(log_b[0]["train/kl"], rel=1e-12)
    assert log_a[0]["train/loss"] == pytest.approx(log_b[0]["train/loss"], rel=1e-9)
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
