"""Online losses (harness/methods/online.py) against hand-worked numbers, exact expectations and autograd."""

import math

import pytest
import torch

from harness.methods import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    PpoTokens,
    explained_variance,
    gae,
    group_advantages,
    grpo_denominator,
    grpo_numerators,
    grpo_token_losses,
    kl_per_token,
    ppo_policy_loss,
    ppo_token_losses,
    ppo_token_rewards,
    ppo_value_loss,
    whiten,
    zero_signal_fraction,
)

F64 = torch.float64


def t(values, **kw):
    return torch.tensor(values, dtype=F64, **kw)


# ---------------------------------------------------------------- KL estimators


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_estimators_exact_expectation_under_pi(estimator):
    """E_{y ~ pi}[k(y)], summed exactly over the support of two categorical distributions.

    pi = (0.5, 0.3, 0.2), pi_ref = (0.25, 0.25, 0.5).  KL(pi || pi_ref) = sum pi log(pi / pi_ref)
    = 0.5 ln 2 + 0.3 ln 1.2 + 0.2 ln 0.4.  k1 and k3 are unbiased for it (for k3: E[pi_ref/pi] = 1);
    E[k2] = 1/2 sum pi (ln(pi / pi_ref))^2 (Schulman 2020).
    """
    pi, ref = [0.5, 0.3, 0.2], [0.25, 0.25, 0.5]
    kl = 0.5 * math.log(2) + 0.3 * math.log(1.2) + 0.2 * math.log(0.4)
    half_sq = 0.5 * (0.5 * math.log(2) ** 2 + 0.3 * math.log(1.2) ** 2 + 0.2 * math.log(0.4) ** 2)
    expected = {"k1": kl, "k2": half_sq, "k3": kl}[estimator]
    per_token = kl_per_token(t([[math.log(p) for p in pi]]), t([[math.log(p) for p in ref]]), estimator)
    assert float((t([pi]) * per_token).sum()) == pytest.approx(expected, rel=1e-12)
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3"}


def test_k3_is_nonnegative_and_unknown_estimator_names_choices():
    x = torch.linspace(-3, 3, 13, dtype=F64)[None]
    assert (kl_per_token(x, torch.zeros_like(x), "k3") >= 0).all()
    with pytest.raises(ValueError, match="k1.*k2.*k3.*'k4'"):
        kl_per_token(x, x, "k4")


# ---------------------------------------------------------------- PPO rewards and GAE


def test_score_lands_on_last_response_token_never_on_padding():
    """Rows: prompt then response then pad; all response; response only in the last column."""
    mask = t([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1]])
    kl = torch.full((3, 4), 0.5, dtype=F64)
    rewards = ppo_token_rewards(t([1.0, 2.0, 3.0]), kl, mask, beta=0.1)
    # -beta * kl = -0.05 on every response token; the score is added at the last one.
    expected = t([[0, -0.05, 0.95, 0], [-0.05, -0.05, -0.05, 1.95], [0, 0, 0, 2.95]])
    torch.testing.assert_close(rewards, expected)


def test_empty_response_raises():
    mask = t([[1, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"empty response.*\[1\]"):
        ppo_token_rewards(t([1.0, 2.0]), torch.zeros(2, 3, dtype=F64), mask, beta=0.1)


def test_gae_five_steps_by_hand_including_a_span_starting_at_column_2():
    """gamma = lam = 0.5 (gamma * lam = 0.25), r = (0, 0, 1, 0, 2), V = (1, 2, 1, 0, 1), V after the end = 0.

    t=4: delta = 2 + 0.5*0 - 1 = 1;          A = 1
    t=3: delta = 0 + 0.5*1 - 0 = 0.5;        A = 0.5 + 0.25*1 = 0.75
    t=2: delta = 1 + 0.5*0 - 1 = 0;          A = 0 + 0.25*0.75 = 0.1875
    t=1: delta = 0 + 0.5*1 - 2 = -1.5;       A = -1.5 + 0.25*0.1875 = -1.453125
    t=0: delta = 0 + 0.5*2 - 1 = 0;          A = 0.25*(-1.453125) = -0.36328125
    returns = A + V = (0.63671875, 0.546875, 1.1875, 0.75, 2).
    Row 0 has the response in columns 0-4 and padding after it; row 1 in columns 2-6 after a prompt.
    Values and rewards outside the mask are garbage (99, -7) and must not enter.
    """
    r, v = [0, 0, 1, 0, 2], [1, 2, 1, 0, 1]
    rewards = t([r + [99, 99], [99, 99] + r])
    values = t([v + [-7, -7], [-7, -7] + v])
    mask = t([[1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1]])
    adv, ret = gae(rewards, values, mask, gamma=0.5, lam=0.5)
    a = [-0.36328125, -1.453125, 0.1875, 0.75, 1.0]
    g = [0.63671875, 0.546875, 1.1875, 0.75, 2.0]
    torch.testing.assert_close(adv, t([a + [0, 0], [0, 0] + a]), rtol=0, atol=1e-15)
    torch.testing.assert_close(ret, t([g + [0, 0], [0, 0] + g]), rtol=0, atol=1e-15)


def test_whiten_unbiased_masked():
    """Masked values 1, 2, 3, 4 (9 is outside): mean 2.5, unbiased var (2.25+0.25+0.25+2.25)/3 = 5/3."""
    x = t([[1, 2, 3, 0], [4, 9, 0, 0]])
    mask = t([[1, 1, 1, 0], [1, 0, 0, 0]])
    scale = 1 / math.sqrt(5 / 3 + 1e-8)
    expected = t([[-1.5, -0.5, 0.5, 0], [1.5, 0, 0, 0]]) * scale
    torch.testing.assert_close(whiten(x, mask), expected)
    torch.testing.assert_close(whiten(x, mask, shift_mean=False), (expected + 2.5) * mask)
    with pytest.raises(ValueError, match="at least 2"):
        whiten(x, t([[1, 0, 0, 0], [0, 0, 0, 0]]))


# ---------------------------------------------------------------- PPO losses


def test_ppo_policy_loss_both_clip_edges_and_gradients():
    """eps = 0.2.  Tokens (A, r): (+2, 1.5) clipped at 1.2: loss -2.4, grad 0; (-1, 0.5) clipped at 0.8:
    loss 0.8, grad 0; (+2, 0.5) unclipped: loss -1, d/dlogp = -A r = -1; (-1, 1.5) unclipped: loss 1.5,
    d/dlogp = 1.5.  r = exp(logp - old_logp) with old_logp = 0, so the ratio uses the stored log-probs:
    a ratio against the current log-probs would be 1 and the losses -A = (-2, 1, -2, 1).
    """
    logps = t([[math.log(1.5), math.log(0.5), math.log(0.5), math.log(1.5), 5.0]], requires_grad=True)
    old = torch.zeros(1, 5, dtype=F64)
    adv = t([[2.0, -1.0, 2.0, -1.0, 3.0]])
    mask = t([[1, 1, 1, 1, 0]])
    losses, metrics = ppo_policy_loss(logps, old, adv, mask, cliprange=0.2)
    torch.testing.assert_close(losses.detach(), t([[-2.4, 0.8, -1.0, 1.5, 0.0]]))
    losses.sum().backward()
    torch.testing.assert_close(logps.grad, t([[0.0, 0.0, -1.0, 1.5, 0.0]]))
    assert float(metrics["clip_fraction"]) == pytest.approx(0.5)
    half_sq = 0.5 * (2 * math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2) / 4
    assert float(metrics["approx_kl"]) == pytest.approx(half_sq)
    assert float(metrics["ratio_mean"]) == pytest.approx((1.5 + 0.5 + 0.5 + 1.5) / 4)


def test_ppo_ratio_uses_stored_rollout_logps_not_current():
    """logp - old = ln 1.1 and A = 1, inside the clip range: loss = -1.1; the current-logps ratio gives -1."""
    logps = t([[-1.0, -2.0]], requires_grad=True)
    old = logps.detach() - math.log(1.1)
    losses, _ = ppo_policy_loss(logps, old, t([[1.0, 1.0]]), t([[1, 1]]), cliprange=0.2)
    torch.testing.assert_close(losses.detach(), t([[-1.1, -1.1]]))


def test_ppo_value_loss_clipping():
    """eps_v = 0.5.  (V, V_old, R): (3, 2, 1): clip(V) = 2.5, max((3-1)^2, (2.5-1)^2) = 4, loss 2, grad V-R = 2;
    (3, 2, 4): max(1, (2.5-4)^2 = 2.25): loss 1.125, clipped so grad 0; (0.4, 0.5, 0): inside: loss 0.08,
    grad 0.4.  value_clip_fraction = 1/3."""
    values = t([[3.0, 3.0, 0.4, 7.0]], requires_grad=True)
    old, returns, mask = t([[2.0, 2.0, 0.5, 0.0]]), t([[1.0, 4.0, 0.0, 0.0]]), t([[1, 1, 1, 0]])
    losses, metrics = ppo_value_loss(values, old, returns, mask, cliprange_value=0.5)
    torch.testing.assert_close(losses.detach(), t([[2.0, 1.125, 0.08, 0.0]]))
    losses.sum().backward()
    torch.testing.assert_close(values.grad, t([[2.0, 0.0, 0.4, 0.0]]))
    assert float(metrics["value_clip_fraction"]) == pytest.approx(1 / 3)


def test_ppo_token_losses_by_hand():
    """Two response tokens and one padding column; cliprange 0.2, cliprange_value 0.2, vf_coef 0.5, ent_coef 0.1.

    token 0: r = 1.5, A = 1: max(-1.5, -1.2) = -1.2 (clipped); V = 1, V_old = 0, R = 2: clip(V) = 0.2,
             1/2 max((1 - 2)^2, (0.2 - 2)^2) = 1.62; H = 2: -1.2 + 0.5 * 1.62 - 0.1 * 2 = -0.59.
    token 1: r = 0.5, A = 1: max(-0.5, -0.8) = -0.5; V = 0.1, V_old = 0, R = 0: 1/2 * 0.01 = 0.005;
             H = 1: -0.5 + 0.0025 - 0.1 = -0.5975.
    The padding column holds garbage and gives 0.
    """
    batch = PpoTokens(logps=t([[math.log(1.5), math.log(0.5), 9.0]]), old_logps=t([[0.0, 0.0, -9.0]]),
                      advantages=t([[1.0, 1.0, 5.0]]), values=t([[1.0, 0.1, 7.0]]), old_values=t([[0.0, 0.0, 3.0]]),
                      returns=t([[2.0, 0.0, 1.0]]), mask=t([[1, 1, 0]]), entropies=t([[2.0, 1.0, 4.0]]))
    losses, m = ppo_token_losses(batch, cliprange=0.2, cliprange_value=0.2, vf_coef=0.5, ent_coef=0.1)
    torch.testing.assert_close(losses, t([[-0.59, -0.5975, 0.0]]))
    assert m["clip_fraction"].item() == pytest.approx(0.5) and m["value_clip_fraction"].item() == pytest.approx(0.5)
    assert m["policy_loss"].item() == pytest.approx((-1.2 - 0.5) / 2)
    assert m["value_loss"].item() == pytest.approx((1.62 + 0.005) / 2)
    with pytest.raises(ValueError, match="ent_coef"):
        ppo_token_losses(PpoTokens(**{**vars(batch), "entropies": None}), cliprange=0.2, cliprange_value=0.2,
                         vf_coef=0.5, ent_coef=0.1)


def test_explained_variance():
    """V = (1, 2, 3), R = (2, 4, 6): Var(R - V) = 2/3, Var(R) = 8/3, so 1 - 1/4 = 0.75 (padding ignored)."""
    ev = explained_variance(t([[1, 2, 3, 50]]), t([[2, 4, 6, -50]]), t([[1, 1, 1, 0]]))
    assert float(ev) == pytest.approx(0.75)
    assert math.isnan(float(explained_variance(t([[1, 2]]), t([[3, 3]]), t([[1, 1]]))))


# ---------------------------------------------------------------- GRPO advantages


REWARDS = [0.0, 1.0, 2.0, 3.0, 3.0, 3.0]  # two groups of 3: (0, 1, 2) mean 1, unbiased std 1; (3, 3, 3) std 0


def test_group_advantages_group_norm():
    expected = t([-1, 0, 1, 0, 0, 0]) / (1 + 1e-4)
    torch.testing.assert_close(group_advantages(t(REWARDS), 3, "group"), expected)


def test_group_advantages_batch_norm():
    """Centered by the group means, scaled by the batch std: batch mean 2, squares 4+1+0+1+1+1 = 8, var 8/5."""
    expected = t([-1, 0, 1, 0, 0, 0]) / (math.sqrt(1.6) + 1e-4)
    torch.testing.assert_close(group_advantages(t(REWARDS), 3, "batch"), expected)


def test_group_advantages_no_norm_and_zero_signal():
    torch.testing.assert_close(group_advantages(t(REWARDS), 3, "none"), t([-1, 0, 1, 0, 0, 0]))
    assert zero_signal_fraction(t(REWARDS), 3) == 0.5
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(t(REWARDS), 4, "group")
    with pytest.raises(ValueError, match="advantage_norm"):
        group_advantages(t(REWARDS), 3, "std")


# ---------------------------------------------------------------- GRPO token losses and aggregation


def test_grpo_token_losses_by_hand():
    """eps_low 0.2, eps_high 0.28.  Row 0 (A = +1): r = 1.5 -> clipped at 1.28: -1.28; r = 1: -1.
    Row 1 (A = -1): r = 0.5 -> clipped at 0.8: 0.8; r = 1.5 -> unclipped: 1.5.
    beta 0.04 with log pi - log pi_ref = ln 2: k3 = 1/2 + ln 2 - 1 on every token, weighted by r = (1.5, 1;
    0.5, 1.5) as TRL 1.16 does by default (use_bias_correction_kl), mean r = 1.125; unweighted when off."""
    logps = t([[math.log(1.5), 0.0, 9.0], [math.log(0.5), math.log(1.5), 9.0]])
    old, mask, adv = torch.zeros(2, 3, dtype=F64), t([[1, 1, 0], [1, 1, 0]]), t([1.0, -1.0])
    losses, metrics = grpo_token_losses(logps, old, None, adv, mask, 0.2, 0.28, beta=0.0)
    torch.testing.assert_close(losses, t([[-1.28, -1.0, 0], [0.8, 1.5, 0]]))
    assert [float(metrics[f"clip_ratio/{k}_mean"]) for k in ("low", "high", "region")] == [0.25, 0.25, 0.5]
    assert "kl" not in metrics
    k3 = 0.5 + math.log(2) - 1
    ref = logps - math.log(2)
    losses, metrics = grpo_token_losses(logps, old, ref, adv, mask, 0.2, 0.28, beta=0.04)
    torch.testing.assert_close(losses, t([[-1.28 + 0.04 * k3 * 1.5, -1.0 + 0.04 * k3, 0],
                                          [0.8 + 0.04 * k3 * 0.5, 1.5 + 0.04 * k3 * 1.5, 0]]))
    assert float(metrics["kl"]) == pytest.approx(1.125 * k3)
    losses, metrics = grpo_token_losses(logps, old, ref, adv, mask, 0.2, 0.28, beta=0.04, kl_ratio_correction=False)
    torch.testing.assert_close(losses, t([[-1.28, -1.0, 0], [0.8, 1.5, 0]]) + 0.04 * k3 * mask)
    assert float(metrics["kl"]) == pytest.approx(k3)
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_token_losses(logps, old, None, adv, mask, 0.2, 0.28, beta=0.04)


def test_grpo_kl_gradient_on_policy():
    """On-policy (old = current, r = 1), A = 0, log pi - log pi_ref = ln 2, beta = 0.04.
    d k3 / d log pi = 1 - exp(log pi_ref - log pi) = 1/2.  With the ratio weight, d (r k3) / d log pi =
    k3 + 1/2 = ln 2 (dr / d log pi = r = 1): the gradient is 0.04 ln 2; without it, 0.04 / 2."""
    for correction, expected in ((True, 0.04 * math.log(2)), (False, 0.02)):
        logps = t([[-1.0]], requires_grad=True)
        losses, _ = grpo_token_losses(logps, logps.detach(), logps.detach() - math.log(2), t([0.0]), t([[1]]),
                                      0.2, 0.2, beta=0.04, kl_ratio_correction=correction)
        losses.sum().backward()
        assert float(logps.grad) == pytest.approx(expected, rel=1e-12)


def test_grpo_aggregations_ragged_batch():
    """Token losses (1, 2, 3), (4), (5, 6) (garbage 100 outside the mask), max_completion_length 4:
    grpo = mean(2, 4, 5.5) = 11.5/3; bnpo = dapo = 21/6 = 3.5; dr_grpo = 21 / (3 * 4) = 1.75."""
    losses = t([[1, 2, 3], [4, 100, 100], [100, 5, 6]])
    mask = t([[1, 1, 1], [1, 0, 0], [0, 1, 1]])
    expected = {"grpo": 11.5 / 3, "bnpo": 3.5, "dapo": 3.5, "dr_grpo": 1.75}
    for aggregation, value in expected.items():
        loss = grpo_numerators(losses, mask, aggregation).sum() / grpo_denominator([mask], aggregation, 4)
        assert float(loss) == pytest.approx(value, rel=1e-12), aggregation
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_denominator([mask], "dr_grpo", 2)
    with pytest.raises(ValueError, match="loss_aggregation"):
        grpo_numerators(losses, mask, "token")


def _ragged_rollout(seed=0, b=8, t_=7):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(b, t_, generator=g, dtype=F64) * 3
    old = logps + 0.3 * torch.randn(b, t_, generator=g, dtype=F64)
    ref = logps + 0.5 * torch.randn(b, t_, generator=g, dtype=F64)
    adv = torch.randn(b, generator=g, dtype=F64)
    starts, lengths = [0, 2, 1, 3, 0, 4, 1, 2], [7, 1, 5, 2, 3, 3, 6, 4]
    mask = torch.zeros(b, t_, dtype=F64)
    for row, (s, n) in enumerate(zip(starts, lengths)):
        mask[row, s:s + n] = 1
    return logps, old, ref, adv, mask


def _big_batch_loss(token_losses, mask, aggregation, max_len):
    """The one-big-batch loss written out: TRL's formulas on the whole batch."""
    sums = (token_losses * mask).sum(-1)
    if aggregation == "grpo":
        return (sums / mask.sum(-1)).mean()
    if aggregation == "dr_grpo":
        return sums.sum() / (mask.shape[0] * max_len)
    return sums.sum() / mask.sum()


@pytest.mark.parametrize("aggregation", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grad_accumulation_uneven_minibatches_equal_one_big_batch(aggregation, beta):
    """Minibatches of 3, 3, 2 ragged rows, each numerator sum divided by the step's denominator, accumulate
    to the one-big-batch loss and gradient (float64).  Catches the mutation "divide each minibatch by its own
    denominator and average the minibatches" (TRL's per-micro-batch bnpo): asserted to differ below."""
    logps, old, ref, adv, mask = _ragged_rollout()
    max_len = 7
    leaf = logps.clone().requires_grad_(True)
    big_losses, _ = grpo_token_losses(leaf, old, ref, adv, mask, 0.2, 0.28, beta)
    big = _big_batch_loss(big_losses, mask, aggregation, max_len)
    (big_grad,) = torch.autograd.grad(big, leaf)

    splits = [slice(0, 3), slice(3, 6), slice(6, 8)]
    denom = grpo_denominator([mask[s] for s in splits], aggregation, max_len)
    leaf = logps.clone().requires_grad_(True)
    total, mutant = 0.0, 0.0
    for s in splits:
        token_losses, _ = grpo_token_losses(leaf[s], old[s], ref[s], adv[s], mask[s], 0.2, 0.28, beta)
        numerators = grpo_numerators(token_losses, mask[s], aggregation)
        loss = numerators.sum() / denom
        loss.backward()
        total += float(loss.detach())
        mutant += float(numerators.detach().sum()) / grpo_denominator([mask[s]], aggregation, max_len) / len(splits)
    assert total == pytest.approx(float(big.detach()), rel=1e-12, abs=1e-14)
    torch.testing.assert_close(leaf.grad, big_grad, rtol=1e-12, atol=1e-14)
    assert abs(mutant - float(big.detach())) > 1e-3


# ---------------------------------------------------------------- adaptive KL controller


def test_adaptive_kl_controller_hand_sequence():
    """beta 0.1, target 6, horizon 10000, 256 samples per update (n/h = 0.0256):
    KL 9: e = 0.5 -> clipped 0.2:   beta = 0.1 * (1 + 0.2 * 0.0256) = 0.100512
    KL 5: e = -1/6:                 beta = 0.100512 * (1 - 0.0256/6) = 0.10008315...
    KL 0: e = -1 -> clipped -0.2:   beta = 0.10008315... * (1 - 0.00512)"""
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    b1 = 0.100512
    b2 = b1 * (1 - 0.0256 / 6)
    b3 = b2 * 0.99488
    got = [ctl.update(9.0, 256), ctl.update(5.0, 256), ctl.update(0.0, 256)]
    assert got == pytest.approx([b1, b2, b3], rel=1e-12)
    assert b2 == pytest.approx(0.100083149, rel=1e-8)
    fixed = AdaptiveKLController(0.05)
    assert [fixed.update(100.0, 256), fixed.update(0.0, 256)] == [0.05, 0.05]
