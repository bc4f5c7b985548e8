"""Fault campaign, disk and permissions: a results_dir that cannot be written, a disk full during a save.

Each gives one clear error line and a non-zero exit, and leaves nothing a re-run would
trust: no stage-cache marker, no partial checkpoint; the same command then trains the
stage again and finishes.

- results_dir below a regular file fails for every user; a read-only (chmod 555)
  results_dir only for non-root users (root writes through permissions), so that variant
  is skipped under root; both take the same check (``harness.cache.writable_dir``).
- A full disk during the checkpoint save: simulated by a ``save_pretrained`` that writes
  part of a file and then fails with ENOSPC (fast suite), and for real on a 64 KiB tmpfs
  mounted over the stage cache (slow; needs root and mount rights, else skipped).
"""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import transformers
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.train.models import resolve_model_path
from tests.e2e.test_judge import outputs_file
from tests.run.test_sweep import write_spec

TRAIN = {"batch_size": 4, "max_length": 64, "max_steps": 2, "log_every": 1, "lr": 1e-3}


def _spec(tmp_path: Path, results_dir: Path) -> Path:
    return write_spec(tmp_path, results_dir=str(results_dir), ablate={}, eval={"suites": []}, stages=None,
                      method={"name": "sft"}, train=TRAIN, data={"train": "toy://arith-sft", "fraction": 0.01})


def _one_error_line(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-800:]
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def _unwritable(tmp_path: Path, how: str) -> Path:
    if how == "below-a-file":
        (tmp_path / "a-file").write_text("not a directory")
        return tmp_path / "a-file" / "results"
    if os.geteuid() == 0:
        pytest.skip("running as root, which writes through chmod 555; the below-a-file variant takes the same check")
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    return results


@pytest.mark.parametrize("how", ["below-a-file", "read-only"])
def test_an_unwritable_results_dir_is_one_clear_error(tmp_path, capsys, how):
    results = _unwritable(tmp_path, how)
    try:
        assert main(["sweep", str(_spec(tmp_path, results))]) == 2
        _one_error_line(capsys.readouterr().err, "results_dir", str(results), "cannot write there")
        cand = outputs_file(tmp_path / "cand.jsonl", "cand", {0, 1})
        assert main(["judge", "--outputs", str(cand), "--baseline", str(cand), "--suite", "pairwise",
                     "--results-dir", str(results)]) == 2
        _one_error_line(capsys.readouterr().err, "--results-dir", str(results))
    finally:
        if results.is_dir():
            results.chmod(0o755)
    assert not (results / "mlflow.db").exists()


def _trial_runs(results: Path):
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sweeptest").experiment_id])
    return [r for r in runs if "harness.trial_id" in r.data.tags]


def _assert_failed_then_rerun(tmp_path: Path, spec: Path, results: Path, err: str, undo) -> None:
    """The sweep said why in one line per place (the trial's FAILED line and the summary), no traceback."""
    failed = [line for line in err.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1 and "Traceback" not in err, err[-800:]
    assert "cannot write the checkpoint" in failed[0] and "No space left on device" in failed[0], failed[0]
    (trial,) = _trial_runs(results)
    assert trial.info.status == "FAILED" and "No space left" in trial.data.tags["harness.error"]
    stages = results / "cache" / "stages"
    assert not list(stages.rglob("meta.json"))  # no entry a re-run would trust
    assert not [p for p in stages.rglob("*") if p.is_file()]  # and no partial checkpoint left behind
    undo()
    assert main(["sweep", str(spec)]) == 0  # the same command trains the stage again and finishes
    (trial,) = _trial_runs(results)
    assert trial.info.status == "FINISHED" and trial.data.metrics["train/optimizer_steps"] == TRAIN["max_steps"]
    assert len(list(stages.rglob("meta.json"))) == 1


def test_a_full_disk_during_the_checkpoint_save(tmp_path, monkeypatch, capsys):
    """ENOSPC from the OS, simulated where the save writes: a partial weights file, then the error."""
    def full_disk(self, save_directory, *args, **kwargs):
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / "model.safetensors").write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    resolve_model_path("toy://micro", tmp_path)  # the toy model is built (saved) before the disk fills
    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", full_disk)
    results = tmp_path / "results"
    spec = _spec(tmp_path, results)
    assert main(["sweep", str(spec)]) == 1
    _assert_failed_then_rerun(tmp_path, spec, results, capsys.readouterr().err, monkeypatch.undo)


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"harness-test-{uuid.uuid4().hex[:8]}",
                           str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.mark.slow  # ~3 s, but it mounts a file system: kept out of the fast suite
def test_a_really_full_disk_during_the_checkpoint_save(tmp_path, capsys):
    """A 64 KiB tmpfs over the stage cache: the micro model's 134 kB weights do not fit.

    safetensors reports the OS's ENOSPC as its own SafetensorError, not OSError, which the
    simulated variant cannot show.
    """
    resolve_model_path("toy://micro", tmp_path)  # the toy model is built before the disk fills
    results = tmp_path / "results"
    stages = results / "cache" / "stages"
    _mount_tmpfs(stages, "64k")
    mounted = True

    def unmount():
        nonlocal mounted
        subprocess.run(["umount", str(stages)], check=True)
        mounted = False

    try:
        spec = _spec(tmp_path, results)
        assert main(["sweep", str(spec)]) == 1
        _assert_failed_then_rerun(tmp_path, spec, results, capsys.readouterr().err, unmount)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(stages)], check=False)
