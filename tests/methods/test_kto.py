"""KTO loss and its KL estimate against float64 numpy, gradcheck and hand-worked numbers."""

import numpy as np
import pytest
import torch

from harness.methods import KtoLogps, kto_kl_estimate, kto_loss, mismatched_partners


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _kto_inputs(seed=0, b=9):
    g = torch.Generator().manual_seed(seed)
    pol = -(torch.rand(b, generator=g, dtype=torch.float64) * 20 + 1)
    ref = pol + torch.randn(b, generator=g, dtype=torch.float64)
    desirable = torch.rand(b, generator=g) > 0.5
    desirable[0], desirable[1] = True, False
    return pol, ref, desirable


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.33, 0.7)])
def test_kto_vs_numpy(weights):
    wd, wu = weights
    beta, kl = 0.2, 0.37
    pol, ref, desirable = _kto_inputs()
    got, metrics = kto_loss(KtoLogps(pol, ref, desirable, kl), beta=beta, desirable_weight=wd, undesirable_weight=wu)
    r, d = (pol - ref).numpy(), desirable.numpy()
    expected = np.where(d, wd * (1 - _sigmoid(beta * (r - kl))), wu * (1 - _sigmoid(beta * (kl - r))))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx((beta * r)[d].mean())
    assert metrics["rewards/rejected"].item() == pytest.approx((beta * r)[~d].mean())
    assert metrics["kl"].item() == pytest.approx(kl)


def test_kto_gradcheck_and_kl_is_constant():
    pol, ref, desirable = _kto_inputs(1, b=5)
    inputs = (pol.clone().requires_grad_(True), ref.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(lambda p, r: kto_loss(KtoLogps(p, r, desirable, 0.2), beta=0.5)[0], inputs)


def test_kl_estimate_is_a_constant_in_the_gradient():
    """z0 from the policy's own mismatched log-probs carries no gradient, checked analytically.

    z0 = max(0, mean((-1 - -1.5), (-2 - -3))) = 0.75.  With z0 constant and x = beta (r - z0),
    d/dr [1 - sigma(x)] = -beta sigma(x)(1 - sigma(x)) (desirable) and
    d/dr [1 - sigma(-x)] = +beta sigma(x)(1 - sigma(x)) (undesirable); nothing reaches policy_kl.
    """
    beta = 0.5
    policy_kl = torch.tensor([-1.0, -2.0], dtype=torch.float64, requires_grad=True)
    pol, ref, desirable = _kto_inputs(2, b=6)
    pol.requires_grad_(True)
    z0 = kto_kl_estimate(policy_kl, torch.tensor([-1.5, -3.0], dtype=torch.float64), [])
    loss = kto_loss(KtoLogps(pol, ref, desirable, z0), beta=beta)[0].sum()
    grad_pol, grad_kl = torch.autograd.grad(loss, [pol, policy_kl], allow_unused=True)
    assert grad_kl is None or not grad_kl.any()
    x = beta * ((pol - ref).detach().numpy() - 0.75)
    slope = beta * _sigmoid(x) * (1 - _sigmoid(x))
    np.testing.assert_allclose(grad_pol.numpy(), np.where(desirable.numpy(), -slope, slope), rtol=1e-12)


def test_kl_estimate_by_hand():
    """Mean of (-1 - -1.5, -2 - -3) = 0.75; a negative mean clamps to 0; no pairs -> running mean."""
    assert kto_kl_estimate(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -3.0]), []) == pytest.approx(0.75)
    assert kto_kl_estimate(torch.tensor([-3.0]), torch.tensor([-1.0]), [0.5]) == 0.0
    empty = torch.zeros(0)
    assert kto_kl_estimate(empty, empty, []) == 0.0
    assert kto_kl_estimate(empty, empty, [0.2, 0.0, 0.7]) == pytest.approx(0.3)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_mismatched_partners_never_pair_an_example_with_itself(n):
    partners = mismatched_partners(n)
    assert len(partners) == (n if n >= 2 else 0)
    assert all(k != j for k, j in enumerate(partners)) and sorted(partners) == list(range(len(partners)))


def test_kto_batch_of_one_and_odd_size():
    """A single undesirable example at z0 = 0 with r = 0: loss = 1 - sigma(0) = 0.5; the desirable mean is 0."""
    loss, metrics = kto_loss(KtoLogps(torch.tensor([-2.0]), torch.tensor([-2.0]), torch.tensor([False]), 0.0), beta=0.1)
    assert loss.item() == pytest.approx(0.5) and metrics["rewards/chosen"].item() == 0.0
    pol, ref, desirable = _kto_inputs(2, b=7)
    loss, _ = kto_loss(KtoLogps(pol, ref, desirable, 0.1), beta=0.1)
    assert loss.shape == (7,) and torch.isfinite(loss).all()
