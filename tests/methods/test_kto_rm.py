"""KTO and reward-model losses against float64 numpy, gradcheck and hand-worked numbers."""

import numpy as np
import pytest
import torch

from harness.methods import (
    KtoLogps,
    PairRewards,
    kto_kl_estimate,
    kto_loss,
    mismatched_partners,
    pool_rewards,
    rm_loss,
)


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
    # z0 is detached: the estimate is a float, so no gradient can flow through it.
    policy_kl = torch.tensor([-1.0, -2.0], requires_grad=True)
    assert isinstance(kto_kl_estimate(policy_kl, torch.tensor([-1.5, -3.0]), []), float)


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


def test_rm_loss_vs_numpy_with_margin_and_centering():
    g = torch.Generator().manual_seed(3)
    c, r, m = (torch.randn(8, generator=g, dtype=torch.float64) for _ in range(3))
    got, metrics = rm_loss(PairRewards(c, r, m), center_rewards_coefficient=0.01)
    cn, rn, mn = c.numpy(), r.numpy(), m.numpy()
    expected = np.logaddexp(0, -(cn - rn - mn)) + 0.01 * (cn + rn) ** 2
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    both = np.concatenate([cn, rn])
    assert metrics["rewards/accuracy"].item() == pytest.approx((cn > rn).mean())
    assert metrics["rewards/margin"].item() == pytest.approx((cn - rn).mean())
    assert metrics["rewards/std"].item() == pytest.approx(both.std())
    plain, _ = rm_loss(PairRewards(c, r))
    np.testing.assert_allclose(plain.numpy(), np.logaddexp(0, -(cn - rn)), rtol=1e-12)
    inputs = (c[:3].clone().requires_grad_(True), r[:3].clone().requires_grad_(True))
    assert torch.autograd.gradcheck(
        lambda a, b: rm_loss(PairRewards(a, b, m[:3]), center_rewards_coefficient=0.1)[0], inputs)


def test_pool_rewards_by_hand():
    """Row 0: response at positions 2..3 -> last = 0.4, mean = 0.35; row 1: position 1 only (then padding)."""
    values = torch.tensor([[9.0, 9.0, 0.3, 0.4], [9.0, -1.0, 7.0, 7.0]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0]])
    torch.testing.assert_close(pool_rewards(values, mask, "last"), torch.tensor([0.4, -1.0]))
    torch.testing.assert_close(pool_rewards(values, mask, "mean"), torch.tensor([0.35, -1.0]))
