"""The code verifier: program extraction, item checks, the shipped tasks, and pass@k scoring."""

import itertools
import math
from fractions import Fraction

import pytest

from harness.errors import HarnessError
from harness.eval.suites.code import load_code_items
from harness.toy import toy_dataset
from judges import code
from judges.code import build_script, extract_program, score_code_outputs
from judges.sandbox import runner as sandbox
from judges.sandbox.runner import Isolation
from judges.stats.pass_at_k import pass_at_k

FENCE = "```"


@pytest.mark.parametrize("text,expected", [
    ("def f():\n    return 1\n", "def f():\n    return 1\n"),  # no fence: the whole text
    (f"Here:\n{FENCE}python\ndef f():\n    return 1\n{FENCE}\nDone.", "def f():\n    return 1\n"),
    (f"{FENCE}py\nA = 1\n{FENCE}\ntext\n{FENCE}python3\nB = 2\n{FENCE}\n", "A = 1\n\nB = 2\n"),
    (f"{FENCE}bash\nls\n{FENCE}\n{FENCE}Python\nx = 1\n{FENCE}", "x = 1\n"),  # other languages dropped
    (f"{FENCE}\nx = 1\n{FENCE}\n{FENCE}text\nhello\n{FENCE}", "x = 1\n"),  # unlabelled when no python
    (f"Sure.\n{FENCE}python\ndef f():\n    return 2", "def f():\n    return 2"),  # cut-off fence
])
def test_extract_program(text, expected):
    assert extract_program(text) == expected


def test_a_later_block_redefines_an_earlier_one():
    reply = (f"{FENCE}python\ndef f():\n    return 0\n{FENCE}\nOops, fixed:\n"
             f"{FENCE}python\ndef f():\n    return 1\n{FENCE}")
    item = {"id": "x", "tests": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}
    namespace = {}
    exec(build_script(extract_program(reply), item), namespace)  # noqa: S102 (our own test code)


def _passes_in_process(program: str, item: dict) -> bool:
    try:
        exec(build_script(program, item), {})  # noqa: S102 (our own reference solutions)
    except AssertionError:
        return False
    return True


def test_shipped_tasks_accept_their_solution_and_reject_wrong_ones():
    rows = toy_dataset("code-eval")
    items = load_code_items("toy://code-eval")
    assert len(items) == 30 and len({i["id"] for i in items}) == 30
    for row, item in zip(rows, items):
        assert _passes_in_process(row["canonical_solution"], item), item["id"]
        constant = f"def {item['entry_point']}(*args):\n    return None\n"
        assert not _passes_in_process(constant, item), item["id"]
        assert item["entry_point"] in item["prompt"][0]["content"]


def _closed_form(n, c, k):
    """Chen et al. 2021, Eq. 1, in exact rationals."""
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def test_pass_at_k_is_the_share_of_k_subsets_with_a_pass():
    """pass@k as defined (Chen et al. 2021): over all k-subsets of the n samples, the share holding
    at least one pass; enumerated directly, independent of the binomial formula."""
    for scores in ([1, 0, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1], [0, 1, 0, 0, 0, 0, 1, 0]):
        for k in range(1, len(scores) + 1):
            subsets = list(itertools.combinations(scores, k))
            share = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(len(scores), sum(scores), k) == pytest.approx(share), (scores, k)


def test_score_code_outputs_pass_at_k():
    """Three items, n = 4 samples each, c = 3, 1 and 0 correct.

    Failures: a wrong answer, a syntax error, a missing function, an infinite loop (timeout)
    and a crash.  pass@k for k = 1, 2, 4 is the mean of the closed form over the items.
    """
    items = load_code_items("toy://code-eval", limit=3)  # add, is_even, reverse_string
    good = toy_dataset("code-eval")[:3]
    samples = [
        [f"{FENCE}python\n{good[0]['canonical_solution']}{FENCE}", good[0]["canonical_solution"],
         "def add(a, b):\n    return a - b\n", f"Sure!\n{FENCE}python\ndef add(a, b): return b + a\n{FENCE}"],
        ["def is_even(n) return n % 2 == 0", good[1]["canonical_solution"], "def odd(n):\n    return 1\n",
         "def is_even(n):\n    while True:\n        pass\n"],
        ["def reverse_string(s):\n    raise RuntimeError('no')\n", "x = ", "", "def reverse_string(s): return s"],
    ]
    metrics, judgments = score_code_outputs(items, samples, {"k": [1, 2, 4], "timeout_s": 2.0})
    assert [j["scores"] for j in judgments] == [[1, 1, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert [(j["id"], j["n"], j["correct"]) for j in judgments] == [
        ("code-000", 4, 3), ("code-001", 4, 1), ("code-002", 4, 0)]
    reasons = judgments[1]["reasons"]
    assert reasons[0].startswith("exit code 1: SyntaxError") and reasons[1] == "passed"
    assert reasons[2] == "exit code 1: NameError: name 'is_even' is not defined"
    assert reasons[3] == "wall time limit exceeded (2 s)"
    assert judgments[2]["reasons"][0] == "exit code 1: RuntimeError: no"
    for k in (1, 2, 4):
        expected = [_closed_form(4, c, k) for c in (3, 1, 0)]
        mean = sum(expected) / 3
        se = math.sqrt(sum((v - mean) ** 2 for v in expected) / 2 / 3)
        assert metrics[f"pass_at_{k}"] == pytest.approx(mean)
        assert metrics[f"pass_at_{k}_se"] == pytest.approx(se)
    assert metrics["pass_at_1"] == pytest.approx((3 / 4 + 1 / 4 + 0) / 3)
    assert metrics["num_prompts"] == 3 and metrics["num_samples"] == 12
    assert metrics["timeout_rate"] == pytest.approx(1 / 12)


def test_k_larger_than_n_is_refused_before_running():
    items = load_code_items("toy://code-eval", limit=2)
    with pytest.raises(HarnessError, match=r"eval.code.k: \[4\] not in 1..n for item 'code-001'.*n=2"):
        score_code_outputs(items, [["x"] * 4, ["x"] * 2], {"k": [1, 4]})


def test_refuses_without_isolation(monkeypatch):
    monkeypatch.setattr(sandbox, "isolation", lambda: Isolation(False, False, ("not root",)))
    monkeypatch.setattr(code, "run_python", lambda *a, **k: pytest.fail("ran without isolation"))
    items = load_code_items("toy://code-eval", limit=1)
    with pytest.raises(HarnessError, match="code sandbox unavailable: not root.*unsafe: true"):
        score_code_outputs(items, [["x"]], {"k": [1]})
