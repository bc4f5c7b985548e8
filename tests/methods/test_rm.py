"""Reward-model loss and reward pooling against float64 numpy and hand-worked numbers."""

import numpy as np
import pytest
import torch

from harness.methods import PairRewards, pool_rewards, rm_loss


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


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
