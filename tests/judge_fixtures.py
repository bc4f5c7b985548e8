"""Shared by the judge-suite tests (the `toy_url` fixture itself lives in conftest.py)."""

from harness.data.load import load_rows


def arith_items(n):
    """The first ``n`` toy://arith-eval items as (question text, integer answer)."""
    return [(r.data["prompt"][0]["content"], int(r.data["answer"]))
            for r in load_rows("toy://arith-eval", "eval")[:n]]
