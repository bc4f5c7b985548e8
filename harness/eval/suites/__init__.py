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


def limited_items(name: str, options: dict) -> tuple[list[dict], str | None]:
    """The suite's items under ``options['limit']``, and a line saying what the limit cut (None: nothing).

    The line is printed wherever items are generated for, so no limit cuts data unseen:
    "mtbench: 50 of 80 prompts (eval.mtbench.limit)".
    """
    every = SUITES[name].items({**options, "limit": None})
    limit = options.get("limit")
    if limit is None or limit >= len(every):
        return every, None
    return every[:limit], f"{name}: {limit} of {len(every)} prompts (eval.{name}.limit)"
