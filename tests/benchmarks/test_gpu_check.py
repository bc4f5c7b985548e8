"""benchmarks/gpu_check.py: its arithmetic by hand, and every part at toy size on CPU (--cpu-smoke)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_flops_follow_the_palm_count():
    """6·N·T + 12·L·d·T² per sequence: N=10, L=2, d=4 and T = 3, 5 by hand."""
    gc = _module()
    world = {"matmul_params": 10}
    size = {"layers": 2, "hidden": 4}
    assert gc.sequence_flops([3, 5], world, size) == (6 * 10 * 3 + 12 * 2 * 4 * 9) + (6 * 10 * 5 + 12 * 2 * 4 * 25)


def test_steady_state_step_time_leaves_out_the_first_step():
    gc = _module()
    assert gc.step_seconds([10.0, 10.5, 11.0, 11.5]) == pytest.approx(0.5)


def test_mfu_is_model_flops_over_time_and_peak():
    gc = _module()
    results = {"dpo": {"step_s": 0.5, "tokens_per_s": 1.0, "flops_per_step": 2e14, "first_loss": math.log(2)},
               "trl_dpo": {"step_s": 0.75, "first_loss": math.log(2)}}
    summary = gc.summarize(results, {"params": 1}, 1e15, "H200")
    assert summary["dpo_mfu"] == pytest.approx(2e14 / 0.5 / 1e15)
    assert summary["dpo_step_ratio_trl_over_harness"] == pytest.approx(1.5)
    assert summary["dpo_first_loss_minus_ln2"] == pytest.approx(0.0)
    assert "dpo_step_ratio_padded_over_shared" not in summary  # dpo_padded did not run


def test_layout_ratio_is_padded_step_time_over_shared():
    gc = _module()
    results = {"dpo": {"step_s": 0.4, "tokens_per_s": 1.0, "flops_per_step": 1.0, "first_loss": 0.69, "last_loss": 0.5},
               "dpo_padded": {"step_s": 0.5, "tokens_per_s": 1.0, "flops_per_step": 1.0, "first_loss": 0.69,
                              "last_loss": 0.52}}
    summary = gc.summarize(results, {"params": 1}, 1e15, "H200")
    assert summary["dpo_step_ratio_padded_over_shared"] == pytest.approx(1.25)
    assert summary["dpo_last_loss_shared_minus_padded"] == pytest.approx(-0.02)
    # The same model FLOPs (padding is not counted) in more time: a lower MFU for the slower layout.
    assert summary["dpo_mfu"] == pytest.approx(1.0 / 0.4 / 1e15)
    assert summary["dpo_padded_mfu"] == pytest.approx(1.0 / 0.5 / 1e15)


@pytest.mark.slow
def test_cpu_smoke_runs_every_part(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    parts, summary = report["parts"], report["summary"]
    assert not [p for p, r in parts.items() if "error" in r], parts
    for part in ("sft", "sft_checkpointing", "dpo", "dpo_padded", "lora"):
        assert parts[part]["steps"] == 3 and math.isfinite(parts[part]["last_loss"])
        assert parts[part]["tokens_per_s"] > 0
    # Policy = reference at step 0: every DPO margin is 0, so the loss is ln 2, for harness and for TRL.
    assert parts["dpo"]["first_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert parts["trl_dpo"]["first_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert parts["dpo_padded"]["first_loss"] == pytest.approx(math.log(2), abs=1e-6)
    # The two layouts train the same model on the same batches (fp32 on CPU): the same loss to rounding.
    assert summary["dpo_last_loss_shared_minus_padded"] == pytest.approx(0.0, abs=1e-5)
    # Checkpointing recomputes, it does not change the numbers.
    assert parts["sft_checkpointing"]["first_loss"] == pytest.approx(parts["sft"]["first_loss"], rel=1e-6)
    assert parts["qlora"]["refused"].startswith("lora.quantize: 'nf4' (QLoRA) needs a CUDA GPU")
    gen = parts["generate"]
    assert 0 < gen["transformers_tokens"] <= gen["prompts"] * 8 and gen["transformers_tokens_per_s"] > 0
    assert gen["vllm"].startswith("skipped: ")
    assert parts["judge"]["skipped"].startswith("the vllm command is not installed")
    assert summary["dpo_mfu"] is None  # no bf16 peak on a CPU
    assert "| dpo_step_ratio_trl_over_harness |" in (tmp_path / "gpu_check.md").read_text()
