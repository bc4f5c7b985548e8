"""robust, ipo, hinge, simpo, orpo against float64 numpy, gradcheck and closed forms."""

import math

import numpy as np
import pytest
import torch

from harness.methods import (
    PairLogps,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    log1mexp,
    orpo_loss,
    robust_loss,
    simpo_loss,
)

LOG2 = math.log(2)


def _random_logps(seed, b=12, scale=40.0):
    g = torch.Generator().manual_seed(seed)
    return [-(torch.rand(b, generator=g, dtype=torch.float64) * scale + 0.01) for _ in range(4)]


def _np(*xs):
    return [x.detach().numpy() for x in xs]


def _np_h(pc, pr, rc, rr):
    return (pc - rc) - (pr - rr)


def _np_neg_logsig(x):
    """-log sigma(x) = log(1 + e^-x)."""
    return np.logaddexp(0, -x)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.45])
def test_robust_vs_numpy(eps):
    beta = 0.3
    xs = _random_logps(10, scale=5)
    got, metrics = robust_loss(PairLogps(*xs), beta=beta, label_smoothing=eps)
    z = beta * _np_h(*_np(*xs))
    expected = ((1 - eps) * _np_neg_logsig(z) - eps * _np_neg_logsig(-z)) / (1 - 2 * eps)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert metrics["rewards/margin"].item() == pytest.approx(z.mean())


def test_robust_at_eps_zero_is_dpo_and_rejects_half():
    xs = _random_logps(11)
    torch.testing.assert_close(robust_loss(PairLogps(*xs), beta=0.1)[0], dpo_loss(PairLogps(*xs), beta=0.1)[0])
    with pytest.raises(ValueError, match="label_smoothing"):
        robust_loss(PairLogps(*xs), beta=0.1, label_smoothing=0.5)


@pytest.mark.parametrize("beta", [0.05, 0.5])
def test_ipo_vs_numpy(beta):
    xs = _random_logps(12, scale=3)
    got, _ = ipo_loss(PairLogps(*xs), beta=beta)
    np.testing.assert_allclose(got.numpy(), (_np_h(*_np(*xs)) - 1 / (2 * beta)) ** 2, rtol=1e-12)


def test_hinge_vs_numpy_and_kink():
    beta = 0.5
    xs = _random_logps(13, scale=6)
    got, _ = hinge_loss(PairLogps(*xs), beta=beta)
    z = beta * _np_h(*_np(*xs))
    np.testing.assert_allclose(got.numpy(), np.maximum(0, 1 - z), rtol=1e-12, atol=1e-15)
    assert (z > 1).any() and (z < 1).any()  # both sides of the hinge are exercised


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_simpo_vs_numpy(gamma):
    beta = 2.0
    pc, pr, _, _ = _random_logps(14, scale=3)
    got, metrics = simpo_loss(PairLogps(pc, pr), beta=beta, gamma=gamma)
    c, r = _np(pc, pr)
    np.testing.assert_allclose(got.numpy(), _np_neg_logsig(beta * (c - r) - gamma), rtol=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx(beta * c.mean())
    assert metrics["rewards/accuracy"].item() == pytest.approx((c > r).mean())


def test_log1mexp_stable_on_both_branches():
    x = torch.tensor([-1e-10, -1e-5, -0.5, -math.log(2), -0.9, -5.0, -50.0], dtype=torch.float64)
    expected = [math.log(-math.expm1(v)) for v in x.tolist()]
    np.testing.assert_allclose(log1mexp(x).numpy(), expected, rtol=1e-12, atol=1e-15)
    assert log1mexp(x[-1:]).item() == pytest.approx(-math.exp(-50.0), rel=1e-12)  # log(1 - u) ~ -u
    assert torch.autograd.gradcheck(log1mexp, (x[2:].clone().requires_grad_(True),))  # finite steps of 1e-6 need x < -1e-6


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_orpo_vs_numpy(beta):
    """log-odds(m) = m - log(1 - e^m); loss = nll - beta log sigma(lo(c) - lo(r))."""
    g = torch.Generator().manual_seed(15)
    pc, pr = (-(torch.rand(10, generator=g, dtype=torch.float64) * 3 + 1e-3) for _ in range(2))
    nll = torch.rand(10, generator=g, dtype=torch.float64) * 2
    got, metrics = orpo_loss(PairLogps(pc, pr, nll_chosen=nll), beta=beta)
    c, r, n = _np(pc, pr, nll)
    lo = (c - np.log1p(-np.exp(c))) - (r - np.log1p(-np.exp(r)))
    np.testing.assert_allclose(got.numpy(), n + beta * _np_neg_logsig(lo), rtol=1e-12)
    assert metrics["log_odds_chosen"].item() == pytest.approx(lo.mean())
    assert metrics["rewards/chosen"].item() == pytest.approx(beta * c.mean())


def test_orpo_finite_near_probability_one():
    pc = torch.tensor([-1e-9, 0.0], dtype=torch.float64, requires_grad=True)
    pr = torch.tensor([-2.0, -2.0], dtype=torch.float64)
    loss, _ = orpo_loss(PairLogps(pc, pr, nll_chosen=torch.zeros(2, dtype=torch.float64)), beta=0.1)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(pc.grad).all()


def test_gradchecks():
    xs = tuple(x[:4].clone().requires_grad_(True) for x in _random_logps(16, scale=3))
    for fn in (lambda *x: robust_loss(PairLogps(*x), beta=0.2, label_smoothing=0.2)[0],
               lambda *x: ipo_loss(PairLogps(*x), beta=0.2)[0],
               lambda *x: simpo_loss(PairLogps(x[0], x[1]), beta=1.5, gamma=0.3)[0]):
        assert torch.autograd.gradcheck(fn, xs)
    # hinge: away from the kink (gradcheck needs differentiability at the inputs).
    pc, _, rc, _ = (x.detach() for x in xs)
    hinge_in = (pc.clone().requires_grad_(True), (pc - 1.0).requires_grad_(True), rc.clone(), rc.clone())
    hinge_in[2].requires_grad_(True)
    hinge_in[3].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda *x: hinge_loss(PairLogps(*x), beta=0.5)[0], hinge_in)  # z = 0.5 < 1
    nll = torch.rand(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: orpo_loss(PairLogps(a, b, nll_chosen=c), beta=0.3)[0],
                                    (xs[0] / 10, xs[1] / 10, nll))


def test_closed_forms_at_zero_margin():
    """policy == reference -> h = 0: dpo log 2 (any eps); robust (1 - 2 eps) log 2 / (1 - 2 eps) = log 2;
    ipo (1 / (2 beta))^2; hinge max(0, 1 - 0) = 1."""
    pc, pr, _, _ = _random_logps(17)
    ref = (pc.clone(), pr.clone())
    beta = 0.25
    full = lambda v: torch.full_like(pc, v)
    torch.testing.assert_close(dpo_loss(PairLogps(pc, pr, *ref), beta=beta, label_smoothing=0.2)[0], full(LOG2))
    torch.testing.assert_close(robust_loss(PairLogps(pc, pr, *ref), beta=beta, label_smoothing=0.3)[0], full(LOG2))
    torch.testing.assert_close(ipo_loss(PairLogps(pc, pr, *ref), beta=beta)[0], full(4.0))
    torch.testing.assert_close(hinge_loss(PairLogps(pc, pr, *ref), beta=beta)[0], full(1.0))
