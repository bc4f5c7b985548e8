"""TRL 1.16 DPOTrainer vs harness DPO: the same model, data and precision, end to end.

Usage:  python benchmarks/dpo_vs_trl.py [--pairs 256] [--batch 16] [--hidden 256] [--layers 4]

The parent process builds one random Llama-style model (the toy tokenizer,
``--hidden``/``--layers``) and writes the pairs as a JSONL file, then runs each
tool in its own child process (one process tree), one after the other, so
neither sees the other's memory.  Each child reports its wall time from
"model and data on disk" to "one epoch trained" (tokenization, reference
log-probs and training included; imports excluded) and its peak memory (peak
RSS on CPU, peak allocated CUDA memory on GPU).  Both use fp32 on CPU (bf16
on GPU), no gradient checkpointing, AdamW, the same lr, batch size and
max_length, and no evaluation, logging or checkpoint saving.  TRL computes
reference log-probs on the fly (its default); harness computes them once
up front and caches them (its design).  Printed: samples/s and peak memory
(and per CPU-second of the child, which shared machines distort less) of
each, and the ratios harness / TRL.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from world import build_world  # benchmarks/world.py, beside this script

ROOT = Path(__file__).resolve().parent.parent


def _peak_memory_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _result(tool: str, n: int, start: float, cpu_start: float) -> dict:
    wall, cpu = time.perf_counter() - start, _cpu_s() - cpu_start
    return {"tool": tool, "wall_s": wall, "cpu_s": cpu, "samples_per_s": n / wall,
            "samples_per_cpu_s": n / cpu, "peak_mib": _peak_memory_mib()}


def run_trl(model_dir: str, data: str, args) -> dict:
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from harness.train.models import load_model, load_tokenizer

    rows = [json.loads(line) for line in Path(data).read_text().splitlines()]
    start, cpu_start = time.perf_counter(), _cpu_s()
    tok = load_tokenizer(model_dir)
    on_gpu = torch.cuda.is_available()
    config = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch, num_train_epochs=1,
                       learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0, beta=0.1,
                       max_length=args.max_length, report_to=[], save_strategy="no", logging_steps=10**6,
                       use_cpu=not on_gpu, bf16=on_gpu, gradient_checkpointing=False, seed=0,
                       dataloader_num_workers=0, disable_tqdm=True)
    trainer = DPOTrainer(model=load_model(model_dir), args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=tok)
    trainer.train()
    return _result("trl", len(rows), start, cpu_start)


def run_harness(model_dir: str, data: str, args) -> dict:
    from harness.config.grid import resolve_stages
    from harness.config.spec import validate_spec
    from harness.train.stages import train_stage

    spec = validate_spec({
        "name": "bench", "model": model_dir, "method": {"name": "dpo", "beta": 0.1},
        "data": {"train": data, "filter": {"drop_identical_pairs": False}},
        "train": {"batch_size": args.batch, "epochs": 1, "lr": 1e-5, "scheduler": "constant", "warmup_ratio": 0.0,
                  "max_length": args.max_length, "log_every": 10**6, "save": "none"},
    })
    (stage,) = resolve_stages(spec)
    with open(data) as f:
        n = sum(1 for _ in f)
    start, cpu_start = time.perf_counter(), _cpu_s()
    with tempfile.TemporaryDirectory() as cache:
        train_stage(stage, model_dir, "bench-model", Path(cache), lambda metrics, step: None, True, progress=False)
    return _result("harness", n, start, cpu_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--child", choices=["trl", "harness"])
    parser.add_argument("--model-dir")
    parser.add_argument("--data")
    args = parser.parse_args()
    if args.child:
        fn = run_trl if args.child == "trl" else run_harness
        print(json.dumps(fn(args.model_dir, args.data, args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data = build_world(Path(tmp), args.hidden, args.layers, "toy://arith-pairs", "pairs", args.pairs)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        results = {}
        for tool in ("trl", "harness"):
            cmd = [sys.executable, __file__, "--child", tool, "--model-dir", model_dir, "--data", data,
                   "--pairs", str(args.pairs), "--batch", str(args.batch), "--max-length", str(args.max_length)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"{tool} child failed:\n{proc.stderr[-3000:]}")
            out = proc.stdout
            results[tool] = json.loads(out.strip().splitlines()[-1])
            print(json.dumps(results[tool]))
    trl, ours = results["trl"], results["harness"]
    print(f"samples/s  trl {trl['samples_per_s']:.2f}  harness {ours['samples_per_s']:.2f}  "
          f"ratio harness/trl {ours['samples_per_s'] / trl['samples_per_s']:.2f}")
    print(f"samples/CPU-s  trl {trl['samples_per_cpu_s']:.2f}  harness {ours['samples_per_cpu_s']:.2f}  "
          f"ratio harness/trl {ours['samples_per_cpu_s'] / trl['samples_per_cpu_s']:.2f}")
    print(f"peak MiB   trl {trl['peak_mib']:.0f}  harness {ours['peak_mib']:.0f}  "
          f"ratio harness/trl {ours['peak_mib'] / trl['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
