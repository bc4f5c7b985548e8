"""Suite alpaca through the real client and the toy judge: weighted preference, orders, LC."""

import pytest

from harness.serve.server import serve_in_background
from harness.serve.toy_judge import make_responder
from judges.alpaca import alpaca_judge, coin_order
from judges.client import JudgeClient
from tests.judge_fixtures import arith_items


def _client(url, tmp_path):
    return JudgeClient(url, "judge", concurrency=8, cache_dir=tmp_path / "cache", backoff_s=0.001)



def test_alpaca_weighted_preference_both_orders_and_coin(toy_url, tmp_path):
    items = [{"id": k, "instruction": q, "output": str(a if k < 6 else a + 1), "baseline": str(a + 2)}
             for k, (q, a) in enumerate(arith_items(10))]
    judged = alpaca_judge(_client(toy_url, tmp_path), items, n_bootstrap=20)
    # The toy judge gives the right output probability 0.9 in either order: 6 rows 0.9, 4 rows 0.5 (both wrong).
    assert judged.metrics["win_rate"] == pytest.approx((6 * 0.9 + 4 * 0.5) / 10)
    assert judged.judgments[0]["preference"] == pytest.approx(1.9)
    assert judged.metrics["first_position_rate"] == pytest.approx(0.5)
    assert 0 < judged.metrics["lc_win_rate"] < 1
    coin = alpaca_judge(_client(toy_url, tmp_path), items, orders="coin", seed=3, n_bootstrap=20)
    assert [row["coin"] for row in coin.judgments] == [coin_order(3, k) for k in range(10)]
    assert coin.metrics["win_rate"] == pytest.approx(judged.metrics["win_rate"])


def test_padding_gains_raw_win_rate_but_not_lc(tmp_path):
    """Verbosity-biased judge (V = 0.6), both answers right, the model pads half of them.

    Padded rows: each order prefers the longer w.p. V (p = 0.9) else ties (0.5), so
    E[p] = 0.5 + 0.4 V = 0.74; unpadded rows are exact ties.  Raw ≈ 0.62, while the LC
    GLM's intercept is pinned by the Δ = 0 rows (labels 0.5): LC = σ(θ) = 0.5.
    """
    items = []
    for k, (q, a) in enumerate(arith_items(60)):
        pad = " I double-checked this carefully, step by step." if k % 2 else ""
        items.append({"id": k, "instruction": q, "output": f"{a}.{pad}", "baseline": f"{a}."})
    with serve_in_background(make_responder(verbosity_bias=0.6, seed=2)) as server:
        m = alpaca_judge(_client(server.base_url, tmp_path), items, n_bootstrap=20).metrics
    assert m["win_rate"] > 0.56
    assert m["lc_win_rate"] == pytest.approx(0.5, abs=0.01)
