"""benchmarks/gpu_online.py at toy size on CPU (--smoke): GRPO through an engine synced before each rollout, and the
weight-sync check, which must see stale weights differ and synced weights agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_online.py"


def test_the_smoke_mode_trains_and_the_weight_sync_check_tells_stale_from_synced(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_online.json").read_text())
    assert report["mode"] == "smoke" and len(report["iterations"]) == 2
    for row in report["iterations"]:
        assert row["generation_s"] > 0 and row["update_s"] > 0 and "weight_sync_s" in row
    assert report["stale"]["mean_abs"] > 1e-3  # the unseen step moved what the engine samples from
    assert report["synced"]["max_abs"] <= 1e-5 and report["passed"] and report["stale_detected"]
    assert "before sync (stale)" in proc.stdout and "after sync" in proc.stdout
