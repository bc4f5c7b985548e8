"""An 8-trial toy sweep run three ways, whole process: sequential, local workers, and Ray.

Usage:  python benchmarks/parallel_sweep.py [--repeats 2] [--steps 150] [--workers 2] [--smoke]

The sweep (written to a temporary directory): ``toy://tiny``, SFT on ``toy://arith-sft``
with ``train.lr`` at 4 values x seeds [0, 1] = 8 independent trials, each ``--steps`` optimizer
steps of batch 32 and an ``arith`` evaluation on 100 prompts; no stage is shared, so the
trials are the whole work.  Three arms, each a fresh ``harness sweep`` process into a fresh
results_dir, timed by the parent from launch to exit (``os.wait4``: wall, CPU and peak RSS of
the sweep and every process it waited for):

- ``sequential``: ``harness sweep SPEC`` (one process, torch's default threads: one per core);
- ``local``: ``--max-parallel W`` (W worker processes, ``resources.cpus_per_trial`` 1: one thread each);
- ``ray``: ``--executor ray --max-parallel W`` (a local Ray instance started by the sweep, one CPU per task).

The arms are interleaved (sequential, local, ray, sequential, ...) so that drift in the
machine's load hits them alike; the toy model is built once (into a shared ``HARNESS_CACHE``) before timing.  The ratio
is sequential wall time over the arm's: above 1, the arm is faster.  ``--smoke`` runs a
2-trial, 5-step sweep once per arm (a check that the script works, not a measurement).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ARMS = {"sequential": [], "local": ["--max-parallel", "{w}"], "ray": ["--executor", "ray", "--max-parallel", "{w}"]}


def write_spec(folder: Path, steps: int, lrs: list[float], seeds: list[int], limit: int) -> Path:
    spec = {
        "name": "parallel-bench", "results_dir": str(folder / "results"), "model": "toy://tiny",
        "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"},
        "train": {"batch_size": 32, "max_length": 64, "max_steps": steps, "log_every": 50, "lr": lrs[0]},
        "eval": {"suites": ["arith"], "generation": {"max_new_tokens": 8},
                 "arith": {"data": "toy://arith-eval", "limit": limit, "n": 1, "k": [1]}},
        "ablate": {"train.lr": lrs},
        "seeds": seeds,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_arm(args: list[str], spec: Path, cache: Path) -> dict:
    """One whole ``harness sweep`` process: wall, CPU (self + children) and peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_CACHE": str(cache)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(spec), *args], env=env,
                            cwd=spec.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"sweep {args} failed:\n{err[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "self_cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": after.ru_maxrss / 1024, "ran": err.count(" ran, ")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--arms", default="sequential,local,ray")
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args()
    lrs, seeds, limit = ([1e-3, 3e-3], [0], 10) if a.smoke else ([5e-4, 1e-3, 2e-3, 3e-3], [0, 1], 100)
    steps, repeats = (5, 1) if a.smoke else (a.steps, a.repeats)
    arms = a.arms.split(",")
    with tempfile.TemporaryDirectory(prefix="parallel-bench-") as tmp:
        cache = Path(tmp) / "toy-cache"
        warm = Path(tmp) / "warm"
        warm.mkdir()
        run_arm([], write_spec(warm, 1, lrs[:1], [0], 2), cache)  # builds toy://tiny once, outside the timing
        times: dict[str, list[dict]] = {arm: [] for arm in arms}
        for r in range(repeats):
            for arm in arms:
                folder = Path(tmp) / f"{arm}-{r}"
                folder.mkdir()
                spec = write_spec(folder, steps, lrs, seeds, limit)
                out = run_arm([x.format(w=a.workers) for x in ARMS[arm]], spec, cache)
                times[arm].append(out)
                print(f"repeat {r} {arm:10s} wall {out['wall_s']:7.1f} s  cpu {out['cpu_s']:7.1f} s  "
                      f"peak rss {out['peak_rss_mb']:7.0f} MB", flush=True)
    trials = len(lrs) * len(seeds)
    print(f"\n{trials} trials x {steps} steps, {a.workers} workers, {os.cpu_count()} CPUs, "
          f"{repeats} repeat(s), medians:")
    base = statistics.median(t["wall_s"] for t in times["sequential"]) if "sequential" in times else None
    for arm in arms:
        wall = statistics.median(t["wall_s"] for t in times[arm])
        cpu = statistics.median(t["cpu_s"] for t in times[arm])
        ratio = f"  sequential/{arm} {base / wall:.2f}" if base else ""
        print(f"  {arm:10s} wall {wall:7.1f} s  cpu {cpu:7.1f} s{ratio}")


if __name__ == "__main__":
    main()
