"""dft, hellinger-sft, brier-sft, iw-sft and sum_sq_probs against float64 numpy."""

import numpy as np
import pytest
import torch

from harness.methods import (
    SftLogps,
    brier_sft_loss,
    dft_loss,
    hellinger_sft_loss,
    iw_sft_loss,
    self_normalized_weights,
    sft_loss,
    sum_sq_probs,
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
        "brier": (brier_sft_loss(SftLogps(tlp, mask, logits=logits), normalization=normalization)[0],
                  ((q - onehot) ** 2).sum(-1)),
    }
    for name, (got, token_losses) in cases.items():
        np.testing.assert_allclose(got.numpy(), _np_reduce(token_losses, mask, normalization), rtol=1e-10,
                                   err_msg=name)


def test_sum_sq_probs_vs_numpy():
    logits, _, _ = _inputs(1)
    np.testing.assert_allclose(sum_sq_probs(logits).numpy(), (_np_probs(logits) ** 2).sum(-1), rtol=1e-12)


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
        return brier_sft_loss(SftLogps(token_logps(lg, ids), mask, logits=lg))[0]

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


def test_iw_sft_scales_sft_numerators():
    logits, ids, mask = _inputs(3)
    tlp = token_logps(logits, ids)
    w = torch.tensor([0.5, 2.0, 0.5], dtype=torch.float64)
    got, metrics = iw_sft_loss(SftLogps(tlp, mask, weights=w), normalization="sequence")
    base, _ = sft_loss(SftLogps(tlp, mask), normalization="sequence")
    torch.testing.assert_close(got, w * base)
    assert metrics["weight_max"].item() == 2.0
