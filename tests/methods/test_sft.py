"""dft, hellinger-sft, brier-sft, iw-sft and off_target_probs against float64 numpy."""

import numpy as np
import pytest
import torch

from harness.methods import (
    SftLogps,
    brier_sft_loss,
    dft_loss,
    hellinger_sft_loss,
    iw_sft_loss,
    off_target_probs,
    self_normalized_weights,
    target_mask,
    token_logps,
)


def _inputs(seed=0, b=3, t=7, v=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g, dtype=torch.float64) * 2
    ids = torch.randint(0, v, (b, t), generator=g)
    loss_mask = (torch.rand(b, t, generator=g) > 0.3).long()
    loss_mask[:, 0] = 0
    return logits, ids, target_mask(loss_mask)


def _np_probs(logits):
    x = logits.numpy()[:, :-1]
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_target_p(logits, ids):
    q = _np_probs(logits)
    return np.take_along_axis(q, ids.numpy()[:, 1:, None], -1)[..., 0], q


def _np_reduce(token_losses, mask, normalization):
    m = mask.numpy().astype(np.float64)
    sums = (token_losses * m).sum(-1)
    return sums if normalization == "token" else sums / np.maximum(m.sum(-1), 1)


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_sft_family_vs_numpy(normalization):
    logits, ids, mask = _inputs()
    tlp = token_logps(logits, ids)
    p, q = _np_target_p(logits, ids)
    onehot = np.zeros_like(q)
    np.put_along_axis(onehot, ids.numpy()[:, 1:, None], 1.0, -1)
    cases = {
        "dft": (dft_loss(SftLogps(tlp, mask), normalization=normalization)[0], -p * np.log(p)),
        "hellinger": (hellinger_sft_loss(SftLogps(tlp, mask), normalization=normalization)[0],
                      # half the squared Hellinger distance, summed over the vocabulary directly
                      0.5 * ((np.sqrt(onehot) - np.sqrt(q)) ** 2).sum(-1)),
        "brier": (brier_sft_loss(SftLogps(tlp, mask, logits=logits, input_ids=ids),
                                  normalization=normalization)[0],
                  ((q - onehot) ** 2).sum(-1)),
    }
    for name, (got, token_losses) in cases.items():
        np.testing.assert_allclose(got.numpy(), _np_reduce(token_losses, mask, normalization), rtol=1e-10,
                                   err_msg=name)


def test_off_target_probs_vs_numpy():
    logits, ids, _ = _inputs(1)
    p, q = _np_target_p(logits, ids)
    mass, squares = off_target_probs(logits, ids)
    np.testing.assert_allclose(mass.numpy(), q.sum(-1) - p, rtol=1e-12)
    np.testing.assert_allclose(squares.numpy(), (q**2).sum(-1) - p**2, rtol=1e-12)


def test_brier_float32_value_and_gradient_when_p_y_near_1():
    """At p_y = 0.99986 the float32 loss and its gradient match float64 to float32 precision.

    The float64 reference is independent of the implementation: q = softmax(l) in numpy,
    loss = sum_v (q_v - e_y)^2 summed directly over the vocabulary, and the analytic gradient
    dL/dl_k = 2 q_k (q_k - e_k) - 2 q_k sum_v (q_v - e_v) q_v.  Computing sum_{v != y} q_v^2
    as sum_v q_v^2 - p_y^2 (and 1 - p_y from p_y) in float32 cancels: the loss came out 3.2x
    too large and the gradient's y component 2.4x.
    """
    row = [7.0, -3.5, -2.9, -4.2, -3.1, -5.0]
    logits = torch.tensor([[row, row]], dtype=torch.float32, requires_grad=True)  # [1, 2, 6]
    ids, mask = torch.tensor([[0, 0]]), torch.tensor([[1]])
    got = brier_sft_loss(SftLogps(token_logps(logits, ids), mask, logits=logits, input_ids=ids))[0]
    got.sum().backward()
    q = np.exp(np.array(row, dtype=np.float32).astype(np.float64))
    q /= q.sum()
    assert 0.99986 < q[0] < 0.99987
    e = np.eye(6)[0]
    expected = ((q - e) ** 2).sum()
    grad = 2 * q * (q - e) - 2 * q * ((q - e) * q).sum()
    assert got.dtype == torch.float32
    np.testing.assert_allclose(float(got.detach()), expected, rtol=1e-6)
    np.testing.assert_allclose(logits.grad[0, 0].numpy(), grad, rtol=1e-5)
    assert not logits.grad[0, 1].any()  # column 1 predicts nothing (T - 1 = 1 position)


def test_dft_gradient_is_p_weighted_nll_gradient():
    """d/d logp of -sg(p) logp = -p: the NLL gradient (-1) scaled by the token's probability."""
    tlp = torch.log(torch.tensor([[0.5, 0.25, 0.9]], dtype=torch.float64)).requires_grad_(True)
    mask = torch.tensor([[1, 1, 0]])
    dft_loss(SftLogps(tlp, mask))[0].sum().backward()
    torch.testing.assert_close(tlp.grad, torch.tensor([[-0.5, -0.25, 0.0]], dtype=torch.float64))


def test_gradchecks_wrt_logits_and_logps():
    logits, ids, mask = _inputs(2, b=2, t=4, v=5)
    logits.requires_grad_(True)

    def brier(lg):
        return brier_sft_loss(SftLogps(token_logps(lg, ids), mask, logits=lg, input_ids=ids))[0]

    assert torch.autograd.gradcheck(brier, (logits,))
    tlp = token_logps(logits, ids).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: hellinger_sft_loss(SftLogps(x, mask))[0], (tlp,))
    # DFT's stop-gradient makes its gradient differ from the derivative of its value on purpose,
    # so gradcheck does not apply; check the analytic gradient -p_y / n_b (sequence) on random inputs.
    dft_loss(SftLogps(tlp, mask), normalization="sequence")[0].sum().backward()
    m = mask.numpy().astype(np.float64)
    expected = -np.exp(tlp.detach().numpy()) * m / np.maximum(m.sum(-1, keepdims=True), 1)
    np.testing.assert_allclose(tlp.grad.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_self_normalized_weights():
    """w / mean(w) from log w; exp(r / tau) with huge r does not overflow; zero weights stay zero."""
    w = torch.tensor([1.0, 3.0, 0.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(self_normalized_weights(w.log()), w / w.mean())
    r = torch.tensor([1000.0, 1001.0], dtype=torch.float64)
    e = np.exp([0.0, 1.0])
    np.testing.assert_allclose(self_normalized_weights(r).numpy(), e / e.mean(), rtol=1e-12)
    with pytest.raises(ValueError, match="weight 0"):
        self_normalized_weights(torch.log(torch.zeros(3)))


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_iw_sft_scales_sft_numerators(normalization):
    """w_i times the example's NLL numerator, against float64 numpy: -log p_y summed, or its row mean."""
    logits, ids, mask = _inputs(3)
    tlp = token_logps(logits, ids)
    w = torch.tensor([0.5, 2.0, 0.5], dtype=torch.float64)
    got, metrics = iw_sft_loss(SftLogps(tlp, mask, weights=w), normalization=normalization)
    p, _ = _np_target_p(logits, ids)
    expected = w.numpy() * _np_reduce(-np.log(p), mask, normalization)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)
    assert metrics["weight_max"].item() == 2.0
