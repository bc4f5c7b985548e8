"""The suite registry: one record per suite of the spec, each naming the spec's options model."""

from harness.config.spec import SUITES as SPEC_SUITES
from harness.config.suite_options import SUITE_OPTIONS
from harness.eval.suites import SUITES


def test_every_spec_suite_has_one_record_with_its_options_model():
    assert tuple(SUITES) == SPEC_SUITES
    assert {name: suite.options for name, suite in SUITES.items()} == SUITE_OPTIONS
    assert all(suite.name == name for name, suite in SUITES.items())
