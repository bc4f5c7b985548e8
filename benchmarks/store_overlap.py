"""Can the MLflow store's start-up be hidden behind training?  Measured, each case in a fresh process.

Usage:  python benchmarks/store_overlap.py [--hidden 256] [--layers 4] [--repeats 2]

The MLflow store costs a `harness train` about 1.5-1.7 s (benchmarks/RESULTS.md, issue 15), and nearly all
of it is importing Python code: ``mlflow`` itself (pandas and mlflow.genai come with it) and MLflow's
SQLAlchemy store module; the store's operations take milliseconds.  Two ways to take it off the critical
path, both measured here on the DPO benchmark's model (benchmarks/world.py) with one torch thread:

- a thread: the store imports in a background thread while the main thread runs compute that releases
  the GIL (48 no-grad forwards of a [16, 27] batch, as the reference pass; or 12 training steps, whose
  backward runs in autograd's engine without the GIL).  Compared with the same work done one after the
  other, at the interpreter's default switch interval (5 ms) and shorter ones (``sys.setswitchinterval``).
- a process: the store in a process of its own.  What it would cost in memory: the resident size the
  MLflow stack adds to a process that has torch and transformers loaded, against the proportional set
  size (PSS, /proc/PID/smaps_rollup) of a process that holds only the MLflow stack.

Each case prints one JSON line; the parent prints them and the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from world import build_world  # benchmarks/world.py, beside this script

CASES = [("reference", "serial", None), ("reference", "thread", 0.005), ("reference", "thread", 0.0005),
         ("reference", "thread", 0.0001), ("training", "serial", None), ("training", "thread", 0.005),
         ("training", "thread", 0.0005)]


def import_store() -> None:
    """What opening harness's tracking store imports (harness.run.tracking.Tracker)."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from mlflow.tracking import MlflowClient  # noqa: F401


def child(model_dir: str, work: str, mode: str, interval: float | None) -> dict:
    import threading

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = torch.randint(0, model.config.vocab_size, (16, 27), generator=torch.Generator().manual_seed(0))

    def reference(n: int = 48) -> None:
        with torch.no_grad():
            for _ in range(n):
                model(input_ids=ids).logits.log_softmax(-1)

    def training(n: int = 12) -> None:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        for _ in range(n):
            model(input_ids=ids).logits.log_softmax(-1).mean().backward()
            opt.step()
            opt.zero_grad()

    run = {"reference": reference, "training": training}[work]
    run(2)  # warm-up: first-call costs are not what is compared
    store_s: list[float] = []

    def store() -> None:
        t = time.perf_counter()
        import_store()
        store_s.append(time.perf_counter() - t)

    start = time.perf_counter()
    if mode == "serial":
        store()
        run()
    else:
        sys.setswitchinterval(interval)
        thread = threading.Thread(target=store)
        thread.start()
        run()
        thread.join()
    return {"work": work, "mode": mode, "switch_interval_s": interval, "total_s": time.perf_counter() - start,
            "store_s": store_s[0]}


def _mib(path: str, field: str) -> float:
    """A kB field of a /proc file, in MiB (the current value: ru_maxrss would carry the forking parent's peak)."""
    return next(int(line.split()[1]) for line in Path(path).read_text().splitlines()
                if line.startswith(field + ":")) / 1024


def memory_child(with_torch: bool) -> dict:
    if with_torch:
        import torch  # noqa: F401
        from transformers import AutoModelForCausalLM  # noqa: F401
    before = _mib("/proc/self/status", "VmRSS")
    import_store()
    return {"with_torch": with_torch, "rss_before_mib": before, "rss_after_mib": _mib("/proc/self/status", "VmRSS"),
            "pss_mib": _mib("/proc/self/smaps_rollup", "Pss")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        fields = json.loads(args.child)
        out = memory_child(fields["with_torch"]) if "with_torch" in fields else child(**fields)
        print(json.dumps(out))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, _ = build_world(Path(tmp), args.hidden, args.layers, "toy://arith-pairs", "pairs", 16)
        runs: dict[tuple, list[dict]] = {}
        for _ in range(args.repeats):
            for work, mode, interval in CASES:
                fields = {"model_dir": model_dir, "work": work, "mode": mode, "interval": interval}
                runs.setdefault((work, mode, interval), []).append(_run(fields))
        for with_torch in (True, False):
            print(json.dumps(_run({"with_torch": with_torch})))
    for (work, mode, interval), rows in runs.items():
        totals = [r["total_s"] for r in rows]
        print(f"{work:9s} {mode:6s} switch {interval or '-':>7}  total s {statistics.median(totals):.2f} "
              f"({', '.join(f'{t:.2f}' for t in totals)})  store import s "
              f"{statistics.median(r['store_s'] for r in rows):.2f}")


def _run(fields: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(fields)], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
