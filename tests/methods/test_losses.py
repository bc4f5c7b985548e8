"""SFT and DPO losses against hand-worked numbers, float64 numpy and analytic gradients."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from harness.data.tokenization import Encoded
from harness.methods import (
    PairLogps,
    SftLogps,
    dpo_loss,
    logratio_margin,
    sequence_logps,
    sft_loss,
    sft_token_losses,
    target_mask,
    token_logps,
    with_sft_weight,
)
from harness.methods.registry import METHODS
from harness.train.forward import step_denominator

LOG2 = math.log(2)


# ---------------------------------------------------------------- SFT


def _two_examples():
    """Example A has targets with p = 1/2 and 1/4; example B one target with p = 1/8.

    Third columns are non-targets (p = 0.9, 0.7) and must not count.
    """
    probs = torch.tensor([[0.5, 0.25, 0.9], [0.3, 0.125, 0.7]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [0, 1, 0]])
    return probs.log(), mask


def test_sft_token_losses_zero_outside_mask():
    logps, mask = _two_examples()
    expected = torch.tensor([[LOG2, 2 * LOG2, 0.0], [0.0, 3 * LOG2, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(sft_token_losses(logps, mask), expected)


def test_sft_loss_token_normalization_by_hand():
    """NLL_A = log 2 + log 4 = 3 log 2 (2 tokens), NLL_B = log 8 = 3 log 2 (1 token).

    "token": per_example = summed NLL = (3 log 2, 3 log 2); the step divides by its
    3 tokens: loss = 6 log 2 / 3 = 2 log 2.  Metrics: nll = 2 log 2, response_length = 1.5.
    """
    logps, mask = _two_examples()
    per_example, metrics = sft_loss(SftLogps(logps, mask), normalization="token")
    torch.testing.assert_close(per_example, torch.tensor([3 * LOG2, 3 * LOG2], dtype=torch.float64))
    assert mask.sum().item() == 3
    assert (per_example.sum() / 3).item() == pytest.approx(2 * LOG2)
    assert metrics["nll"].item() == pytest.approx(2 * LOG2)
    assert metrics["response_length"].item() == pytest.approx(1.5)


def test_sft_loss_sequence_normalization_by_hand():
    """With "sequence", per_example = mean token NLL = (3/2 log 2, 3 log 2); the step divides
    by its 2 examples: loss = (1.5 + 3) log 2 / 2 = 2.25 log 2.  The nll metric stays token-weighted.
    """
    logps, mask = _two_examples()
    per_example, metrics = sft_loss(SftLogps(logps, mask), normalization="sequence")
    torch.testing.assert_close(per_example, torch.tensor([1.5 * LOG2, 3 * LOG2], dtype=torch.float64))
    assert (per_example.sum() / 2).item() == pytest.approx(2.25 * LOG2)
    assert metrics["nll"].item() == pytest.approx(2 * LOG2)


def test_sft_loss_vs_numpy_and_empty_rows():
    g = torch.Generator().manual_seed(0)
    logps = -torch.rand(5, 9, generator=g, dtype=torch.float64) * 4
    mask = (torch.rand(5, 9, generator=g) > 0.4).long()
    mask[2] = 0  # an example whose response was fully truncated
    lp, m = logps.numpy(), mask.numpy().astype(np.float64)
    sums = -(lp * m).sum(-1)
    counts = m.sum(-1)
    tok, metrics = sft_loss(SftLogps(logps, mask), normalization="token")
    seq, _ = sft_loss(SftLogps(logps, mask), normalization="sequence")
    np.testing.assert_allclose(tok.numpy(), sums, atol=1e-12)
    np.testing.assert_allclose(seq.numpy(), np.where(counts > 0, sums / np.maximum(counts, 1), 0), atol=1e-12)
    assert metrics["nll"].item() == pytest.approx(sums.sum() / counts.sum())
    assert not metrics["nll"].requires_grad


def test_sft_loss_metrics_detached_and_errors():
    logps = torch.zeros(1, 2, requires_grad=True)
    per_example, metrics = sft_loss(SftLogps(logps, torch.ones(1, 2)))
    assert per_example.requires_grad
    assert all(not v.requires_grad for v in metrics.values())
    with pytest.raises(ValueError, match="'mean'"):
        sft_loss(SftLogps(logps, torch.ones(1, 2)), normalization="mean")


class _ToyLM(nn.Module):
    """A bigram "language model": embedding -> linear logits [B, T, V]."""

    def __init__(self, vocab=13, dim=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids):
        return self.head(torch.tanh(self.embed(ids)))


def _accumulated_grads(model, ids, loss_mask, splits, normalization):
    """Gradients of micro-batches ``splits``, each divided by harness's ``step_denominator`` for the step."""
    model.zero_grad()
    masks = [target_mask(loss_mask[s]) for s in splits]
    # step_denominator reads examples; give each row one response token per target.
    batches = [[Encoded([0], [0] * int(row.sum())) for row in mask] for mask in masks]
    denom = step_denominator(METHODS["sft"], {"loss_normalization": normalization}, batches)
    for s, mask in zip(splits, masks):
        per_example, _ = sft_loss(SftLogps(token_logps(model(ids[s]), ids[s]), mask), normalization=normalization)
        (per_example.sum() / denom).backward()
    return [p.grad.clone() for p in model.parameters()]


def _one_batch_grads(model, ids, loss_mask, normalization):
    """The big batch's gradient, written out here: float64 log-softmax, all tokens' mean or mean of row means."""
    model.zero_grad()
    logp = torch.log_softmax(model(ids)[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    mask = loss_mask[:, 1:].double()
    if normalization == "token":
        loss = -(logp * mask).sum() / mask.sum()
    else:
        loss = (-(logp * mask).sum(1) / mask.sum(1)).mean()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_grad_accumulation_equals_one_big_batch(normalization):
    """Step normalization: micro-batches divided by ``step_denominator`` give the big batch's gradient.

    Rows have 4, 1, 6 and 2 target tokens and the splits are uneven, so a
    per-micro-batch token mean, or a per-micro-batch row mean averaged over
    micro-batches, would weight tokens differently (checked as a negative control below).
    """
    torch.manual_seed(0)
    model = _ToyLM().double()
    ids = torch.randint(0, 13, (4, 8))
    loss_mask = torch.zeros(4, 8, dtype=torch.long)
    for row, (start, end) in enumerate([(3, 7), (6, 7), (2, 8), (5, 7)]):
        loss_mask[row, start:end] = 1
    big = _one_batch_grads(model, ids, loss_mask, normalization)
    for splits in (
        [slice(0, 4)],
        [slice(0, 2), slice(2, 4)],
        [slice(0, 1), slice(1, 4)],
        [slice(0, 3), slice(3, 4)],
        [slice(i, i + 1) for i in range(4)],
    ):
        micro = _accumulated_grads(model, ids, loss_mask, splits, normalization)
        for a, b in zip(big, micro):
            torch.testing.assert_close(a, b, atol=1e-13, rtol=0)

    model.zero_grad()  # naive per-micro-batch means, averaged over the micro-batches, differ
    for s in [slice(0, 1), slice(1, 4)]:
        mask = target_mask(loss_mask[s])
        per_example, _ = sft_loss(SftLogps(token_logps(model(ids[s]), ids[s]), mask), normalization=normalization)
        denom = mask.sum() if normalization == "token" else mask.shape[0]
        (per_example.sum() / denom / 2).backward()
    assert not torch.allclose(model.head.bias.grad, big[-1], atol=1e-6)


# ---------------------------------------------------------------- DPO


def _random_logps(seed, b=16):
    g = torch.Generator().manual_seed(seed)
    return [-(torch.rand(b, generator=g, dtype=torch.float64) * 40 + 1) for _ in range(4)]


def _numpy_dpo(pc, pr, rc, rr, beta, eps):
    """-(1-eps) log sigma(z) - eps log sigma(-z), using -log sigma(x) = log(1 + e^-x) = logaddexp(0, -x)."""
    z = beta * ((pc - rc) - (pr - rr))
    return (1 - eps) * np.logaddexp(0, -z) + eps * np.logaddexp(0, z)


@pytest.mark.parametrize("eps", [0.0, 0.3])
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_loss_vs_numpy(beta, eps):
    pc, pr, rc, rr = _random_logps(1)
    got, _ = dpo_loss(PairLogps(pc, pr, rc, rr), beta=beta, label_smoothing=eps)
    expected = _numpy_dpo(*(x.numpy() for x in (pc, pr, rc, rr)), beta, eps)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_dpo_analytic_gradient(eps):
    """dL/dz = -(1-eps)(1 - sigma(z)) + eps sigma(z) = sigma(z) - 1 + eps, and dz/dpc = beta, so

    dL/dpc = beta (sigma(z) - 1 + eps) = -dL/dpr = -dL/drc = dL/drr  (eps = 0: beta (sigma(z) - 1)).
    """
    beta = 0.2
    inputs = [x.requires_grad_(True) for x in _random_logps(2)]
    loss, _ = dpo_loss(PairLogps(*inputs), beta=beta, label_smoothing=eps)
    loss.sum().backward()
    pc, pr, rc, rr = (x.detach() for x in inputs)
    z = beta * ((pc - rc) - (pr - rr))
    d = beta * (torch.sigmoid(z) - 1 + eps)
    for x, sign in zip(inputs, [1, -1, -1, 1]):
        torch.testing.assert_close(x.grad, sign * d, atol=1e-14, rtol=0)


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_dpo_gradcheck(eps):
    inputs = tuple(x[:4].clone().requires_grad_(True) for x in _random_logps(3))
    assert torch.autograd.gradcheck(lambda *x: dpo_loss(PairLogps(*x), beta=0.1, label_smoothing=eps)[0], inputs)


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_dpo_at_zero_margin_is_log2(eps):
    """policy == reference -> h = 0 -> -(1-eps) log(1/2) - eps log(1/2) = log 2 for every eps."""
    pc, pr, _, _ = _random_logps(4)
    loss, metrics = dpo_loss(PairLogps(pc, pr, pc.clone(), pr.clone()), beta=0.1, label_smoothing=eps)
    torch.testing.assert_close(loss, torch.full_like(loss, LOG2))
    assert metrics["rewards/margin"].item() == 0.0 and metrics["rewards/accuracy"].item() == 0.0


def test_dpo_metrics_by_hand():
    """beta = 0.5.  Pair 1: pc=-1, pr=-3, rc=-2, rr=-2 -> rewards chosen 0.5, rejected -0.5 (correct).
    Pair 2: pc=-4, pr=-1, rc=-3, rr=-2 -> chosen -0.5, rejected 0.5 (wrong).
    Means: chosen 0, rejected 0, margin 0, accuracy 0.5, logps/chosen -2.5, logps/rejected -2.
    Losses: z = (1, -1) -> (log(1 + e^-1), log(1 + e)).
    """

    def t(*values):
        return torch.tensor(values, dtype=torch.float64, requires_grad=True)

    pc, pr, rc, rr = t(-1, -4), t(-3, -1), t(-2, -3), t(-2, -2)
    loss, metrics = dpo_loss(PairLogps(pc, pr, rc, rr), beta=0.5)
    expected = {
        "rewards/chosen": 0.0,
        "rewards/rejected": 0.0,
        "rewards/margin": 0.0,
        "rewards/accuracy": 0.5,
        "logps/chosen": -2.5,
        "logps/rejected": -2.0,
    }
    assert {k: v.item() for k, v in metrics.items()} == pytest.approx(expected)
    assert all(not v.requires_grad for v in metrics.values())
    torch.testing.assert_close(
        loss.detach(), torch.tensor([math.log1p(math.e**-1), math.log1p(math.e)], dtype=torch.float64)
    )
    torch.testing.assert_close(
        logratio_margin(pc, pr, rc, rr).detach(), torch.tensor([2.0, -2.0], dtype=torch.float64)
    )


def test_dpo_is_stable_at_extreme_margins():
    pc = torch.tensor([0.0, -1e4], dtype=torch.float64)
    loss, _ = dpo_loss(PairLogps(pc, -pc - 1e4, torch.zeros(2), torch.zeros(2)), beta=1.0)
    assert torch.isfinite(loss).all()
    assert loss[0].item() == pytest.approx(0.0, abs=1e-12) and loss[1].item() == pytest.approx(1e4)


def test_dpo_rejects_bad_params():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(PairLogps(x, x, x, x), beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(PairLogps(x, x, x, x), beta=0.1, label_smoothing=0.6)


def test_with_sft_weight_adds_chosen_nll():
    """per_example + weight * mean token NLL of chosen; weight 0 is the identity."""
    per_example = torch.tensor([1.0, 2.0])
    logps = torch.tensor([[-1.0, -3.0, -9.0], [-2.0, -9.0, -9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    nll = -sequence_logps(logps, mask, "mean")  # (2, 2)
    torch.testing.assert_close(with_sft_weight(per_example, nll, 0.5), torch.tensor([2.0, 3.0]))
    assert with_sft_weight(per_example, nll, 0.0) is per_example
