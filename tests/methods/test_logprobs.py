"""Log-prob gathering against independent float64 computations."""

import math

import numpy as np
import pytest
import torch

from harness.methods import (
    entropy_from_logits,
    reduce_logps,
    sequence_logps,
    target_mask,
    token_counts,
    token_logps,
)


def _random_batch(seed=0, b=3, t=7, v=11, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(b, t, v, generator=g)).to(dtype)
    ids = torch.randint(0, v, (b, t), generator=g)
    return logits, ids


def _loop_token_logps(logits, ids):
    """Reference: out[b, t] = log_softmax(logits[b, t])[ids[b, t + 1]], one position at a time, float64."""
    b, t, _ = logits.shape
    out = torch.empty(b, t - 1, dtype=torch.float64)
    for i in range(b):
        for j in range(t - 1):
            out[i, j] = torch.log_softmax(logits[i, j].double(), dim=-1)[ids[i, j + 1]]
    return out


def test_token_logps_matches_position_loop():
    logits, ids = _random_batch()
    got = token_logps(logits, ids)
    assert got.shape == (3, 6) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _loop_token_logps(logits, ids), atol=1e-5, rtol=0)


def test_token_logps_float64_is_exact_and_bf16_runs_in_float32():
    logits, ids = _random_batch(seed=1, dtype=torch.float64)
    got = token_logps(logits, ids)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, _loop_token_logps(logits, ids), atol=1e-12, rtol=0)

    bf16 = logits.to(torch.bfloat16)
    got = token_logps(bf16, ids)
    # The reference sees the same bf16-rounded logits, so only float32 reduction error remains.
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _loop_token_logps(bf16, ids), atol=1e-5, rtol=0)


def test_token_logps_hand_example():
    """V = 2, logits (0, log 3) at every position: p(token 0) = 1/4, p(token 1) = 3/4.

    ids = [1, 0, 1] -> targets (0, 1) -> log-probs (log 1/4, log 3/4).
    """
    logits = torch.tensor([[0.0, math.log(3)]]).expand(3, 2).unsqueeze(0)
    got = token_logps(logits, torch.tensor([[1, 0, 1]]))
    torch.testing.assert_close(got, torch.tensor([[math.log(0.25), math.log(0.75)]]))


def test_token_logps_gradient_matches_log_softmax():
    logits, ids = _random_batch(seed=2, dtype=torch.float64)
    logits.requires_grad_(True)
    token_logps(logits, ids).sum().backward()
    ref = logits.detach().clone().requires_grad_(True)
    torch.log_softmax(ref[:, :-1], -1).gather(-1, ids[:, 1:, None]).sum().backward()
    torch.testing.assert_close(logits.grad, ref.grad, atol=1e-12, rtol=0)


def test_token_logps_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="input_ids"):
        token_logps(torch.zeros(2, 5, 3), torch.zeros(2, 4, dtype=torch.long))


def test_target_mask_shifts_loss_mask():
    """loss_mask marks targets [pad, prompt, prompt, resp, resp, eos, pad] = [0,0,0,1,1,1,0].

    Column t of token_logps scores token t+1, so the target mask is loss_mask[1:] = [0,0,1,1,1,0].
    """
    loss_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 0]])
    assert target_mask(loss_mask).tolist() == [[0, 0, 1, 1, 1, 0]]


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.long, torch.float32])
def test_sequence_logps_sum_and_mean_vs_numpy(mask_dtype):
    g = torch.Generator().manual_seed(3)
    logps = -torch.rand(4, 6, generator=g, dtype=torch.float64) * 5
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1], [0] * 6]).to(mask_dtype)
    lp, m = logps.numpy(), mask.double().numpy()
    sums = (lp * m).sum(-1)
    counts = m.sum(-1)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    np.testing.assert_allclose(sequence_logps(logps, mask, "sum").numpy(), sums, atol=1e-12)
    np.testing.assert_allclose(sequence_logps(logps, mask, "mean").numpy(), means, atol=1e-12)
    np.testing.assert_array_equal(token_counts(mask).numpy(), counts)
    # A cache of (sums, counts) reproduces both reductions.
    torch.testing.assert_close(
        reduce_logps(torch.from_numpy(sums), token_counts(mask), "mean"), torch.from_numpy(means)
    )


def test_sequence_logps_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="'max'"):
        sequence_logps(torch.zeros(1, 2), torch.ones(1, 2), "max")


def test_entropy_from_logits_vs_numpy():
    """H = -sum_v p_v log p_v per position, averaged over masked positions only."""
    logits, _ = _random_batch(seed=4)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]])
    x = logits[:, :-1].double().numpy()
    logp = x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)
    h = -(np.exp(logp) * logp).sum(-1)
    expected = (h * mask.numpy()).sum() / mask.sum().item()
    got = entropy_from_logits(logits.requires_grad_(True), mask)
    assert not got.requires_grad and got.dim() == 0
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_entropy_of_uniform_is_log_v():
    assert entropy_from_logits(torch.zeros(2, 4, 8), torch.ones(2, 3)).item() == pytest.approx(math.log(8))
    assert entropy_from_logits(torch.zeros(1, 4, 8), torch.zeros(1, 3)).item() == 0.0
