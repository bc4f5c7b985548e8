"""harness report after a train or a sweep with --set into an existing experiment (slow: ~1 min, toy://micro).

The real-CLI version of tests/report/test_config_pooling.py (issue 13, defect 0).
"""

from __future__ import annotations

import pandas as pd
import pytest

from harness.cli import main
from tests.run.test_sweep import write_spec


@pytest.mark.slow
@pytest.mark.parametrize("second", [["train", "--set", "stages.sft.train.max_steps=2", "--set", "eval.arith.limit=5"],
                                    ["sweep", "--set", "stages.sft.train.max_steps=2"]])
def test_report_never_pools_configurations(tmp_path, second):
    spec = write_spec(tmp_path)
    assert main(["sweep", str(spec)]) == 0
    assert main([second[0], str(spec), *second[1:]]) == 0
    out = tmp_path / "out"
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    assert main(["report", "sweeptest", "--tracking-uri", uri, "--out", str(out), "--format", "csv"]) == 0
    csv = pd.read_csv(out / "report.csv", dtype={"level": str})
    levels = csv[csv["row_type"] == "level"]
    assert levels["n"].max() == 1  # one seed everywhere: never two runs of seed 0 as one level
    vs_base = csv[(csv["axis"] == "run (vs base)") & (csv["row_type"] == "comparison")
                  & (csv["metric"] == "eval/arith/pass_at_1")]
    if second[0] == "train":
        assert set(vs_base["reference"]) == {"base (eval.arith.limit=8)", "base (eval.arith.limit=5)"}
        assert set(vs_base["n"]) == {5, 8}
    else:
        assert set(vs_base["reference"]) == {"base"} and set(vs_base["n"]) == {8}
