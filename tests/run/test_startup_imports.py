"""Start-up cost: each command imports only what it uses (issue 15).

A real ``harness train`` of a few DPO steps runs in a child process, which then reports the
modules it had loaded: none of the judging, reporting or adapter stack may be among them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

# Heavy packages (or harness parts that pull them) that a full fine-tune never uses.  pandas and scipy
# are not here: MLflow and transformers import them themselves.
NOT_ON_TRAIN = ("openai", "matplotlib", "peft", "judges.client", "harness.report",
                "harness.judge_cmd")

_CHILD = """
import json, sys
from harness.cli import main
code = main(sys.argv[1:])
print("MODULES " + json.dumps(sorted(sys.modules)))
sys.exit(code)
"""


def _child(args: list[str], cwd: Path) -> tuple[int, set[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("MODULES ")]
    modules = set(json.loads(lines[-1][len("MODULES "):])) if lines else set()
    return proc.returncode, modules, proc.stdout[-2000:] + proc.stderr[-3000:]


def _loaded(modules: set[str], names) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def _dpo_spec(tmp_path: Path, name: str, steps: int) -> Path:
    """A few DPO steps on toy://micro, no evaluation, nothing saved: the smallest real `harness train`."""
    spec = {"name": name, "results_dir": str(tmp_path / "results"), "model": "toy://micro",
            "method": {"name": "dpo", "beta": 0.1}, "data": {"train": "toy://arith-pairs", "fraction": 0.02},
            "train": {"batch_size": 4, "max_length": 64, "max_steps": steps, "log_every": 1, "save": "none"},
            "eval": {"suites": []}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_train_imports_no_judging_reporting_or_peft(tmp_path):
    code, modules, output = _child(["train", str(_dpo_spec(tmp_path, "imports", 2))], tmp_path)
    assert code == 0, output
    assert "torch" in modules and "mlflow" in modules  # it did train and track
    assert _loaded(modules, NOT_ON_TRAIN) == []


# What judging output files (or reading a spec) never needs: a model.
NOT_ON_JUDGE_FILES = ("torch", "transformers", "peft", "harness.train.models")


def test_judging_output_files_imports_no_torch_or_transformers(tmp_path):
    """``harness judge --outputs`` scores text: the model stack (torch, transformers) stays unloaded, and the
    method registry and spec (read by every command) load no loss code."""
    rows = [{"instruction": f"What is {a}+{b}?", "output": str(a + b), "generator": "m"} for a, b in [(1, 2), (3, 4)]]
    base = [{**row, "output": "0", "generator": "base"} for row in rows]
    (tmp_path / "out.json").write_text(json.dumps(rows))
    (tmp_path / "base.json").write_text(json.dumps(base))
    code, modules, output = _child(["judge", "--outputs", "out.json", "--baseline", "base.json", "--no-track"],
                                   tmp_path)
    assert code == 0, output
    assert "judges.pairwise" in modules and "harness.config.spec" in modules  # it did judge, with a spec
    assert _loaded(modules, NOT_ON_JUDGE_FILES) == []


def test_cli_import_is_light():
    """``import harness.cli`` (every command's parser) loads no torch, transformers or MLflow."""
    code = ("import sys, json, harness.cli; "
            "print(json.dumps([m for m in ('torch', 'transformers', 'mlflow', 'pandas', 'openai') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert json.loads(out) == []


def test_cli_process_quick_exit_keeps_exit_code_atexit_and_metrics(tmp_path):
    """``python -m harness.cli train`` (``run``: the quick exit) still runs atexit handlers (the profile line),
    writes every queued metric, and exits with the command's code."""
    import sqlite3

    path = _dpo_spec(tmp_path, "exit", 3)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HARNESS_PROFILE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "train", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("HARNESS_PROFILE "))
    assert {"store", "data", "model", "reference", "training"} <= set(json.loads(line[16:])["phases"])
    with sqlite3.connect(tmp_path / "results" / "mlflow.db") as db:
        steps = [s for (s,) in db.execute("SELECT step FROM metrics WHERE key = 'train/loss' ORDER BY step")]
    assert steps == [1, 2, 3]
    bad = subprocess.run([sys.executable, "-m", "harness.cli", "train", str(tmp_path / "missing.yaml")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2


def test_lazy_imports_at_the_first_call_and_calls_the_named_function():
    code = ("import sys, json; from harness.lazy import lazy; f = lazy('colorsys:rgb_to_hsv'); "
            "before = 'colorsys' in sys.modules; value = f(1.0, 0.0, 0.0); "
            "print(json.dumps([before, 'colorsys' in sys.modules, value, f.__name__]))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert json.loads(out) == [False, True, [0.0, 1.0, 1.0], "rgb_to_hsv"]
