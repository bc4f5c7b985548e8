"""The registry of evaluation suites: one ``Suite`` record per suite, one module each.

``SUITES`` maps a name to its record, in the spec's order
(``harness.config.suite_options.SUITE_OPTIONS``, whose options models the records name).
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.eval.suite import Suite
from harness.eval.suites import alpaca, arith, code, mtbench, pairwise, safety, single

SUITES: dict[str, Suite] = {s.name: s for s in (arith.SUITE, pairwise.SUITE, single.SUITE, mtbench.SUITE,
                                                alpaca.SUITE, safety.SUITE, code.SUITE)}


def check_suites(names: list[str]) -> None:
    """Fail before any training when a spec asks for a suite this version cannot run."""
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise HarnessError(f"eval.suites: {unknown} not available in this version (available: {list(SUITES)})")
