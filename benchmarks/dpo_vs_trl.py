"""TRL 1.16 DPOTrainer vs `harness train` / `harness sweep` DPO: whole processes, the same model, data and settings.

Usage:  python benchmarks/dpo_vs_trl.py [--pairs 768] [--batch 16] [--hidden 256] [--layers 4]
                                        [--repeats 3] [--sweep] [--betas 0.05,0.1,0.2,0.5] [--smoke]

The parent builds one random Llama-style model (the toy tokenizer, ``--hidden``/``--layers``;
``benchmarks/world.py``) and writes ``--pairs`` rows of ``toy://arith-pairs`` as JSONL.  Then, for
each repeat, it runs the tools one after the other, alternating which goes first (so a drift in the
shared machine's load hits both), each as its own process:

- TRL: this script's ``--child trl`` (imports torch, datasets and trl; loads the model and tokenizer
  with transformers' Auto classes; ``DPOTrainer.train()``; exit);
- harness: ``python -m harness.cli train SPEC`` (the command a user runs), tracking to an MLflow
  sqlite store in a fresh temporary results_dir, which it creates.

``--sweep``: a β sweep.  harness runs one ``harness sweep`` whose spec ablates ``method.beta`` over
``--betas`` (one process, one start, one tokenization; the reference log-probs are computed once and
shared through the reference cache); TRL runs one process per β, one after the other.

Both: fp32 on CPU (bf16 autocast on GPU), one epoch, batch ``--batch``, ``max_length``
``--max-length``, AdamW (weight decay 0) at a constant lr of 1e-5 with no warmup, gradient clipping at
1.0, dropout off, the rows in file order (no shuffling: TRL's sampler is made sequential, harness
``train.shuffle: false``), so both see the same batches and the loss curves are comparable step by
step.  No evaluation, no checkpoint saving.  harness logs every step's metrics to MLflow
(``train.log_every: 1``: its loss curve is read back from the store); TRL logs nothing (its
``logging_steps`` is never reached) and its per-step loss is recorded in memory from ``compute_loss``.

Measured by the parent per child (``os.wait4``): wall time from launch to exit, CPU time (user +
system) and peak RSS, imports included.  harness's breakdown comes from ``HARNESS_PROFILE=1``
(``harness/profile.py``): start-up + imports (launch to the command's code imported), then the time
in each phase -- store (MLflow: opening or creating the store and every write), data, model load,
reference, training, evaluation -- and the rest ("other": spec, set-up, exit).  TRL's from its
timestamps: start-up + imports, the run (model load, tokenization, reference and training inside
``DPOTrainer``), exit.  Losses: first-step loss of each (must agree within 1e-5) and the largest
per-step difference along the curve.
"""

from __future__ import annotations

import time

STARTED = time.time()  # before any heavy import: a child's start-up ends here

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from world import add_pair_world_args, build_world  # benchmarks/world.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
LR = 1e-5
FIRST_LOSS_TOL = 1e-5


def _stamp(**fields) -> None:
    print("BENCH " + json.dumps(fields), flush=True)


def run_trl(args) -> None:
    """One DPOTrainer run at ``--beta`` (a child process)."""
    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    imported = time.time()
    on_gpu = torch.cuda.is_available()
    losses: list[float] = []

    class Recorded(DPOTrainer):
        """DPOTrainer with the rows in order and each training step's loss kept (the same numbers it trains on)."""

        def _get_train_sampler(self, train_dataset=None):
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                losses.append(float((out[0] if return_outputs else out).detach()))
            return out

    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    config = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch, num_train_epochs=1,
                       learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                       max_grad_norm=1.0, beta=args.beta, max_length=args.max_length, report_to=[],
                       save_strategy="no", eval_strategy="no", logging_steps=10**6, use_cpu=not on_gpu, bf16=on_gpu,
                       gradient_checkpointing=False, seed=0, dataloader_num_workers=0, disable_tqdm=True)
    trainer = Recorded(model=AutoModelForCausalLM.from_pretrained(args.model_dir), args=config,
                       train_dataset=Dataset.from_list(rows), processing_class=tok)
    trainer.train()
    _stamp(started=STARTED, imported=imported, trained=time.time(), losses={str(args.beta): losses})


def harness_spec(args, model_dir: str, data: str, results: str, betas: list[float]) -> dict:
    spec = {
        "name": "dpo-bench", "model": model_dir, "results_dir": results,
        "method": {"name": "dpo", "beta": betas[0]},
        "data": {"train": data, "filter": {"drop_identical_pairs": False}},
        "train": {"batch_size": args.batch, "epochs": 1, "lr": LR, "scheduler": "constant", "warmup_ratio": 0.0,
                  "weight_decay": 0.0, "max_grad_norm": 1.0, "max_length": args.max_length, "log_every": 1,
                  "save": "none", "shuffle": False, "seed": 0},
        "eval": {"suites": []},
    }
    if len(betas) > 1:
        spec["ablate"] = {"method.beta": betas}
    return spec


def run_child(tool: str, cmd: list[str], env: dict, cwd: Path = ROOT) -> dict:
    """Launch one child and wait for it: wall, CPU and peak RSS of its whole process, plus what it printed."""
    launched = time.time()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        exited = time.time()
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        sys.exit(f"{tool} child failed (exit {code}):\n{stdout[-2000:]}\n{stderr[-3000:]}")
    return {"tool": tool, "launched": launched, "exited": exited, "wall_s": exited - launched,
            "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024,
            "stdout": stdout, "stderr": stderr}


def trl_runs(args, model_dir: str, data: str, betas: list[float], env: dict) -> dict:
    """One TRL process per β; times and peak memory summed / maxed over them."""
    total = {"tool": "trl", "wall_s": 0.0, "cpu_s": 0.0, "peak_mib": 0.0, "losses": {}, "startup_imports_s": 0.0,
             "run_s": 0.0, "exit_s": 0.0}
    for beta in betas:
        r = run_child("trl", [sys.executable, __file__, "--child", "trl", "--model-dir", model_dir, "--data", data,
                              "--batch", str(args.batch), "--max-length", str(args.max_length), "--beta", str(beta)],
                      env)
        stamps = json.loads(next(ln for ln in r["stdout"].splitlines() if ln.startswith("BENCH "))[6:])
        total["wall_s"] += r["wall_s"]
        total["cpu_s"] += r["cpu_s"]
        total["peak_mib"] = max(total["peak_mib"], r["peak_mib"])
        total["startup_imports_s"] += stamps["imported"] - r["launched"]
        total["run_s"] += stamps["trained"] - stamps["imported"]
        total["exit_s"] += r["exited"] - stamps["trained"]
        total["losses"].update(stamps["losses"])
    return total


def harness_losses(db: Path) -> dict[str, list[float]]:
    """Each trial's train/loss curve by its method.beta, from the sqlite store."""
    out: dict[str, list[float]] = {}
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT p.value, m.step, m.value FROM metrics m JOIN params p ON p.run_uuid = m.run_uuid "
            "WHERE m.key = 'train/loss' AND p.key = 'method.beta' ORDER BY m.step").fetchall()
    for beta, _, value in rows:
        out.setdefault(str(float(beta)), []).append(value)
    return out


def harness_run(args, model_dir: str, data: str, betas: list[float], env: dict, tmp: Path, n: int,
                root: Path = ROOT, tool: str = "harness") -> dict:
    """``harness train`` (one β) or ``harness sweep`` (several) of the checkout at ``root``, in a fresh results_dir."""
    results = tmp / f"results-{tool}-{n}"
    spec = tmp / f"spec-{tool}-{n}.yaml"  # JSON, which is YAML
    spec.write_text(json.dumps(harness_spec(args, model_dir, data, str(results), betas)))
    command = "sweep" if len(betas) > 1 else "train"
    r = run_child(tool, [sys.executable, "-m", "harness.cli", command, str(spec)],
                  {**env, "PYTHONPATH": str(root), "HARNESS_PROFILE": "1"}, cwd=root)
    out = {"tool": tool, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "peak_mib": r["peak_mib"],
           "losses": harness_losses(results / "mlflow.db")}
    lines = [ln for ln in r["stderr"].splitlines() if ln.startswith("HARNESS_PROFILE ")]
    if lines:  # a checkout from before HARNESS_PROFILE has no breakdown
        prof = json.loads(lines[-1][16:])
        out["startup_imports_s"] = prof["imported"] - r["launched"]
        out.update({f"{k}_s": v for k, v in prof["phases"].items()})
        out["other_s"] = out["wall_s"] - out["startup_imports_s"] - sum(prof["phases"].values())
    return out


def compare_losses(trl: dict, ours: dict) -> dict:
    first = max(abs(trl[b][0] - ours[b][0]) for b in trl)
    curve = max(abs(x - y) for b in trl for x, y in zip(trl[b], ours[b], strict=True))
    return {"first_step_max_abs_diff": first, "curve_max_abs_diff": curve,
            "steps": {b: len(v) for b, v in ours.items()}}


ROWS = [("wall s (whole process)", "wall_s"), ("  start-up + imports", "startup_imports_s"),
        ("  store (MLflow)", "store_s"), ("  data", "data_s"), ("  model load", "model_s"),
        ("  reference", "reference_s"), ("  training", "training_s"), ("  evaluation", "evaluation_s"),
        ("  other (spec, set-up, exit)", "other_s"), ("  TRL run (load, data, ref, train)", "run_s"),
        ("  TRL exit", "exit_s"), ("CPU s (whole process)", "cpu_s"), ("peak RSS MiB", "peak_mib")]


def report(repeats: list[dict], tools: list[str]) -> None:
    print(f"\n{'measure':36s}" + "".join(f" {t:>14s}" for t in tools) + f"   (medians of {len(repeats)} repeats)")
    for label, key in ROWS:
        cells = []
        for tool in tools:
            values = [r[tool].get(key) for r in repeats]
            value = statistics.median(values) if None not in values else None
            fmt = "{:.0f}" if key == "peak_mib" else "{:.2f}"
            cells.append(fmt.format(value) if value is not None else "")
        print(f"{label:36s}" + "".join(f" {c:>14s}" for c in cells))
    for tool in tools[1:]:
        speedups = [r["trl"]["wall_s"] / r[tool]["wall_s"] for r in repeats]
        cpu = [r["trl"]["cpu_s"] / r[tool]["cpu_s"] for r in repeats]
        mem = [r[tool]["peak_mib"] / r["trl"]["peak_mib"] for r in repeats]
        print(f"{tool}: speed-up TRL wall / its wall, per repeat: " + ", ".join(f"{s:.2f}" for s in speedups)
              + f"  (median {statistics.median(speedups):.2f}); CPU TRL / its CPU: "
              + ", ".join(f"{s:.2f}" for s in cpu) + f"  (median {statistics.median(cpu):.2f}); "
              + "peak RSS / TRL's: " + ", ".join(f"{s:.2f}" for s in mem))
        losses = [r[f"losses-{tool}"] for r in repeats]
        print(f"{tool}: losses vs TRL: first step max |diff| "
              f"{max(x['first_step_max_abs_diff'] for x in losses):.2e} (tolerance {FIRST_LOSS_TOL:.0e}); "
              f"curve max |diff| {max(x['curve_max_abs_diff'] for x in losses):.2e}; steps per β {losses[0]['steps']}")
        if max(x["first_step_max_abs_diff"] for x in losses) > FIRST_LOSS_TOL:
            sys.exit(f"{tool}: first-step loss differs from TRL's by more than {FIRST_LOSS_TOL}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_world_args(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="a β sweep: one `harness sweep` vs a TRL process per β")
    parser.add_argument("--betas", default="0.05,0.1,0.2,0.5")
    parser.add_argument("--beta", type=float, default=0.1, help="the single run's β")
    parser.add_argument("--smoke", action="store_true", help="32 pairs, batch 8, a tiny model, one repeat")
    parser.add_argument("--baseline-root", default=None, metavar="DIR",
                        help="also run the harness of another checkout (e.g. `git worktree add DIR COMMIT`), "
                             "interleaved with the others: before / after in one run")
    parser.add_argument("--child", choices=["trl"])
    parser.add_argument("--model-dir")
    parser.add_argument("--data")
    args = parser.parse_args()
    if args.smoke:
        args.pairs, args.batch, args.hidden, args.layers, args.repeats = 32, 8, 64, 2, 1
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        run_trl(args)
        return
    betas = [float(b) for b in args.betas.split(",")] if args.sweep else [args.beta]
    print(json.dumps({k: v for k, v in vars(args).items() if k not in ("child", "model_dir", "data")}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    repeats = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir, data = build_world(tmp, args.hidden, args.layers, "toy://arith-pairs", "pairs", args.pairs)
        tools = ["trl", "harness"] + (["harness-baseline"] if args.baseline_root else [])
        for n in range(args.repeats):
            runs = {}
            order = tools[n % len(tools):] + tools[:n % len(tools)]  # each tool takes its turn first
            for tool in order:
                if tool == "trl":
                    runs["trl"] = trl_runs(args, model_dir, data, betas, env)
                elif tool == "harness":
                    runs[tool] = harness_run(args, model_dir, data, betas, env, tmp, n)
                else:
                    runs[tool] = harness_run(args, model_dir, data, betas, env, tmp, n,
                                             Path(args.baseline_root).resolve(), tool)
            for tool in tools[1:]:
                runs[f"losses-{tool}"] = compare_losses(runs["trl"]["losses"], runs[tool]["losses"])
            print(json.dumps({t: {k: v for k, v in r.items() if k != "losses"} for t, r in runs.items()}), flush=True)
            repeats.append(runs)
    report(repeats, tools)


if __name__ == "__main__":
    main()
