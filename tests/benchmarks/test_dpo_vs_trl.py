"""benchmarks/dpo_vs_trl.py stays runnable: the β-sweep mode at toy size (--smoke), whole processes on both sides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("trl")


@pytest.mark.slow
def test_sweep_smoke_runs_and_losses_agree(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HARNESS_CACHE": str(tmp_path / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dpo_vs_trl.py"), "--smoke", "--sweep",
                           "--betas", "0.1,0.5"], env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "harness: losses vs TRL: first step max |diff|" in out  # the script exits 1 above 1e-5
    assert "start-up + imports" in out and "  training" in out  # the harness breakdown (HARNESS_PROFILE)
