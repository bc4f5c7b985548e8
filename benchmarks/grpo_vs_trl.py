"""TRL 1.16 GRPOTrainer vs `harness train` GRPO: the same model, prompts, reward and settings, whole process.

Usage:  python benchmarks/grpo_vs_trl.py [--prompts-per-step 4] [--group-size 8] [--steps 16]
                                         [--max-new-tokens 32] [--hidden 256] [--layers 4] [--smoke]

The parent process builds one random Llama-style model (the toy tokenizer,
``--hidden``/``--layers``) and writes ``prompts-per-step * steps`` prompt rows of
``toy://arith-prompts`` as a JSONL file (so each tool sees every prompt once), then runs
each tool in its own child process, one after the other:

- TRL: a ``GRPOTrainer`` whose reward function applies the arith verifier
  (``judges.verifiers.check_answer`` against the row's ``answer``) to each completion's text;
- harness: ``harness train SPEC`` as the console script runs it (``harness.cli.main``, then
  ``harness.cli.quick_exit``, the exit of ``harness.cli.run``) on a generated spec, tracking to an MLflow sqlite store in a temporary results_dir,
  ``method.reward: {verifier: arith}`` -- the path a user runs.  It runs twice: first into a fresh
  results_dir, where it creates the MLflow store (MLflow's schema migrations: seconds), then
  again into the same results_dir, as a user's later runs find their store.

Both: fp32 on CPU, ``group-size`` completions of ``prompts-per-step`` prompts per rollout,
one optimizer step per rollout (no minibatches, no gradient accumulation, one iteration),
temperature 1.0, top_p 1.0, no top-k, ``max-new-tokens`` per completion, loss aggregation
``dapo``, beta 0 (no reference model), clip epsilon 0.2 both sides, group-normalized
advantages, AdamW at a constant lr of 1e-6, gradient clipping at 1.0, seed 0, and no
evaluation, checkpoint saving or completion logging.  Metrics: harness computes and logs them
(entropy included) at the first and last step only (``train.log_every`` = steps), each an MLflow
write; TRL computes its per-step metrics, entropy included, every step and reports none (its
``logging_steps`` is never reached).  TRL 1.16 has no ``max_prompt_length``;
harness's (``data.max_prompt_length`` 64) truncates none of these prompts (about 17 tokens).

Measured by the parent per child (``os.wait4``): wall time from launch to exit, CPU time
(user + system) and peak RSS, imports included.  Each child prints timestamps, so the
wall time splits into start-up + imports, the run (model load, trainer/tracking setup,
training), and exit.  Generated tokens are counted on each side (TRL: the reward
function's ``completion_ids``; harness: its ``train/tokens_seen`` metric): sampling differs
between the tools, so the time ratio is meaningful only per generated token.
"""

from __future__ import annotations

import time

STARTED = time.time()  # before any heavy import: the child's start-up ends here

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from world import build_world  # benchmarks/world.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
LR = 1e-6  # both tools' GRPO default
MAX_PROMPT_LENGTH = 64


def _stamp(**fields) -> None:
    """One JSON line for the parent: wall-clock timestamps (time.time) and counts."""
    print("BENCH " + json.dumps(fields), flush=True)


def run_trl(args) -> None:
    import torch  # noqa: F401  (counted as an import)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from judges.verifiers import check_answer

    imported = time.time()
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()]
    generated = {"tokens": 0, "completions": 0, "correct": 0}

    def arith_reward(completions, answer, completion_ids, **_):
        """The arith verifier on each completion's text (conversational prompts: a one-message list)."""
        generated["tokens"] += sum(len(c) for c in completion_ids)
        generated["completions"] += len(completion_ids)
        scores = [float(check_answer(c[0]["content"], a)) for c, a in zip(completions, answer)]
        generated["correct"] += int(sum(scores))
        return scores

    n = args.prompts_per_step * args.group_size
    config = GRPOConfig(
        output_dir=str(Path(args.model_dir).parent / "trl-out"), use_cpu=True, bf16=False, seed=0,
        max_steps=args.steps,
        per_device_train_batch_size=n, gradient_accumulation_steps=1, steps_per_generation=1,
        num_generations=args.group_size, num_iterations=1, max_completion_length=args.max_new_tokens,
        temperature=1.0, top_p=1.0, top_k=0, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, beta=0.0, epsilon=0.2, epsilon_high=0.2, loss_type="dapo",
        scale_rewards="group", mask_truncated_completions=False, use_vllm=False, report_to=[],
        save_strategy="no", eval_strategy="no", logging_steps=10**6, log_completions=False,
        disable_tqdm=True, dataloader_num_workers=0, gradient_checkpointing=False)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(args.model_dir),
                          processing_class=AutoTokenizer.from_pretrained(args.model_dir),
                          reward_funcs=arith_reward, args=config, train_dataset=Dataset.from_list(rows))
    trainer.train()
    _stamp(started=STARTED, imported=imported, trained=time.time(), steps=trainer.state.global_step, **generated)


def harness_spec(args, model_dir: str, data: str, results: str) -> dict:
    return {
        "name": "grpo-bench", "model": model_dir, "results_dir": results,
        "method": {"name": "grpo", "reward": {"verifier": "arith"}, "group_size": args.group_size,
                   "max_new_tokens": args.max_new_tokens, "temperature": 1.0, "top_p": 1.0, "beta": 0.0,
                   "eps_low": 0.2, "eps_high": 0.2, "num_iterations": 1, "minibatches": 1,
                   "advantage_norm": "group", "loss_aggregation": "dapo", "mask_truncated": False},
        "data": {"train": data, "max_prompt_length": MAX_PROMPT_LENGTH},
        "train": {"batch_size": args.prompts_per_step, "max_steps": args.steps, "grad_accum": 1, "lr": LR,
                  "scheduler": "constant", "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0,
                  "max_length": MAX_PROMPT_LENGTH + args.max_new_tokens, "log_every": args.steps,
                  "save": "none", "seed": 0},
    }


def run_harness(args) -> None:
    # What `harness train` imports on its way, loaded here so that it is counted as imports.
    import mlflow  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import harness.run.commands  # noqa: F401
    from harness.cli import main, quick_exit

    imported = time.time()
    code = main(["train", args.spec])
    _stamp(started=STARTED, imported=imported, trained=time.time(), exit_code=code)
    quick_exit(code)  # as the console script (harness.cli.run) exits after a train


def run_child(tool: str, argv: list[str], env: dict) -> dict:
    """Launch one child and wait for it: wall, CPU and peak RSS of its whole process, plus its stamps."""
    launched = time.time()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--child", tool, *argv], env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        exited = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        sys.exit(f"{tool} child failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    stamps = json.loads(next(line for line in stdout.splitlines() if line.startswith("BENCH "))[6:])
    return {"tool": tool, "wall_s": exited - launched, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_mib": usage.ru_maxrss / 1024, "startup_imports_s": stamps["imported"] - launched,
            "run_s": stamps["trained"] - stamps["imported"], "exit_s": exited - stamps["trained"], **stamps}


def harness_tokens(results: Path) -> dict:
    """The latest run's train/tokens_seen (cumulative, at its last step) and step, from the sqlite store."""
    with sqlite3.connect(results / "mlflow.db") as db:
        tokens, step = db.execute(
            "SELECT m.value, m.step FROM metrics m JOIN runs r ON m.run_uuid = r.run_uuid "
            "WHERE m.key = 'train/tokens_seen' ORDER BY r.start_time DESC, m.step DESC LIMIT 1").fetchone()
    return {"tokens": int(tokens), "steps": step}


def report(results: dict, args) -> None:
    trl, new, again = results["trl"], results["harness"], results["harness-again"]
    for r in (trl, new, again):
        r["tokens_per_s"] = r["tokens"] / r["wall_s"]
        r["tokens_per_cpu_s"] = r["tokens"] / r["cpu_s"]
        r["run_tokens_per_s"] = r["tokens"] / r["run_s"]
    rows = [("wall s (whole process)", "wall_s", "{:.1f}"), ("  start-up + imports s", "startup_imports_s", "{:.1f}"),
            ("  run s (load, setup, train)", "run_s", "{:.1f}"), ("  exit s", "exit_s", "{:.1f}"),
            ("CPU s (whole process)", "cpu_s", "{:.1f}"), ("peak RSS MiB", "peak_mib", "{:.0f}"),
            ("generated tokens", "tokens", "{:d}"), ("generated tokens / wall s", "tokens_per_s", "{:.1f}"),
            ("generated tokens / CPU s", "tokens_per_cpu_s", "{:.1f}"),
            ("generated tokens / run s", "run_tokens_per_s", "{:.1f}")]
    print(f"\n{'measure':30s} {'TRL':>8s} {'harness':>8s} {'ratio':>6s} {'harness':>8s} {'ratio':>6s}")
    print(f"{'':30s} {'':>8s} {'(new':>8s} {'':>6s} {'(store':>8s} {'':>6s}")
    print(f"{'':30s} {'':>8s} {'store)':>8s} {'':>6s} {'exists)':>8s} {'':>6s}")
    for label, key, fmt in rows:
        a, b, c = trl[key], new[key], again[key]
        print(f"{label:30s} {fmt.format(a):>8s} {fmt.format(b):>8s} {b / a:6.2f} {fmt.format(c):>8s} {c / a:6.2f}")
    print("ratio: harness / TRL")
    print(f"optimizer steps: TRL {trl['steps']}, harness {new['steps']} and {again['steps']}; "
          f"max possible tokens per tool {args.steps * args.prompts_per_step * args.group_size * args.max_new_tokens}")
    print("higher tokens/s is faster; the wall-time ratio is comparable only per generated token")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="1 step, 2 prompts x 2 completions, 8 tokens, tiny model")
    parser.add_argument("--child", choices=["trl", "harness"])
    parser.add_argument("--model-dir")
    parser.add_argument("--data")
    parser.add_argument("--spec")
    args = parser.parse_args()
    if args.smoke:
        args.prompts_per_step, args.group_size, args.steps, args.max_new_tokens = 2, 2, 1, 8
        args.hidden, args.layers = 64, 2
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        (run_trl if args.child == "trl" else run_harness)(args)
        return
    print(json.dumps({k: v for k, v in vars(args).items() if k not in ("child", "model_dir", "data", "spec")}))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data = build_world(Path(tmp), args.hidden, args.layers, "toy://arith-prompts", "eval", args.prompts_per_step * args.steps)
        results_dir = Path(tmp) / "results"
        spec = Path(tmp) / "grpo-bench.yaml"  # JSON, which is YAML
        spec.write_text(json.dumps(harness_spec(args, model_dir, data, str(results_dir))))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        sizes = ["--prompts-per-step", str(args.prompts_per_step), "--group-size", str(args.group_size),
                 "--steps", str(args.steps), "--max-new-tokens", str(args.max_new_tokens)]
        results = {"trl": run_child("trl", [*sizes, "--model-dir", model_dir, "--data", data], env)}
        print(json.dumps(results["trl"]))
        # First into a fresh results_dir (the run creates its MLflow store), then again into the same one,
        # as a user's later runs find their store.
        for name in ("harness", "harness-again"):
            results[name] = run_child("harness", [*sizes, "--spec", str(spec)], env)
            results[name].update(harness_tokens(results_dir))
            print(json.dumps(results[name]))
    report(results, args)


if __name__ == "__main__":
    main()
