"""The ``harness`` command line.

Errors caused by input (``HarnessError``) print as one line and exit 2;
anything else prints one line and exits 1.  ``--debug`` shows tracebacks.

The console script and ``python -m harness.cli`` enter through ``run``: after ``train`` and
``sweep`` it exits without the interpreter's module teardown (``quick_exit``), which takes
a second or more once torch, transformers and MLflow are loaded (not under a profiler or tracer,
nor with ``HARNESS_FULL_EXIT=1``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable

from harness import profile
from harness.console import quiet_libraries, say
from harness.errors import HarnessError


def _common(p: argparse.ArgumentParser, top: bool = False) -> None:
    # SUPPRESS on subcommands, so `harness --debug sweep` and `harness sweep --debug` both work.
    p.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="show full tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Post-training experiments on LLMs.")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sweep", help="train and evaluate every trial of a spec")
    p.add_argument("spec")
    p.add_argument("--dry-run", action="store_true", help="list the trials and stop")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: this machine (worker processes with --max-parallel > 1); ray: Ray tasks")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="the Ray cluster (default: RAY_ADDRESS, else a local Ray instance for the sweep)")
    p.add_argument("--max-parallel", type=int, default=None, metavar="N",
                   help="trials at once (default: 1 with local; with ray, as many as the cluster fits)")
    p.add_argument("--force", action="store_true", help="re-run finished trials")
    p.add_argument("--tracking-uri", default=None)
    _common(p)

    p = sub.add_parser("train", help="run exactly one trial (no ablate expansion), always")
    p.add_argument("spec")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tracking-uri", default=None)
    _common(p)

    p = sub.add_parser("report", help="compare trials: per-axis tables with CIs, tests and plots")
    p.add_argument("experiments", nargs="+")
    p.add_argument("--out", default=None, help="directory for report files (default results/reports/NAME)")
    p.add_argument("--format", choices=["md", "html", "csv", "md+html", "all"], default="md+html",
                   help="which files to write (default md+html; all adds report.csv and runs.csv)")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--reference", action="append", default=[], metavar="AXIS=LEVEL")
    p.add_argument("--plan", nargs="?", type=float, const=0.0, default=None, metavar="EFFECT",
                   help="add power and planning: the minimum detectable effect of each primary comparison "
                        "and the prompts or seeds needed for EFFECT (default: half that MDE)")
    p.add_argument("--results-dir", default="results")
    _common(p)

    _judge_parser(sub)

    p = sub.add_parser("serve", help="an OpenAI-compatible chat-completions server over a local model "
                                     "or the toy judge (no auth: keep it on 127.0.0.1)")
    p.add_argument("model", metavar="MODEL|toy-judge", help="HF directory or id, toy://NAME, or toy-judge")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--position-bias", type=float, default=0.0, help="toy-judge only")
    p.add_argument("--verbosity-bias", type=float, default=0.0, help="toy-judge only")
    p.add_argument("--results-dir", default="results", help="toy models are built into RESULTS_DIR/cache")
    _common(p)

    p = sub.add_parser("audit", help="audit preference data before training")
    p.add_argument("data", help="pairs data: JSONL / JSON / Parquet path or toy://NAME")
    p.add_argument("--model", default="toy://tiny", help="tokenizer to count tokens with (default toy://tiny)")
    p.add_argument("--eval", default=None, help="held-out data to check for train/eval contamination")
    p.add_argument("--near-threshold", type=float, default=0.8, help="word-trigram Jaccard for 'near' (0.8)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    _common(p)

    p = sub.add_parser("ls", help="experiments in the store, or one experiment's trials with metrics and checkpoints")
    p.add_argument("experiment", nargs="?", default=None, metavar="EXPERIMENT")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--results-dir", default="results")
    _common(p)

    p = sub.add_parser("ui", help="the MLflow UI on the project's store, bound to 127.0.0.1")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--results-dir", default="results")
    _common(p)
    return parser


def _judge_parser(sub) -> None:
    p = sub.add_parser("judge", help="judge a model, output files or annotation files (no training)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", default=None,
                        help="HF directory or id, toy://NAME, or a LoRA adapter directory: generate, then judge")
    source.add_argument("--outputs", nargs="+", default=None, metavar="FILE",
                        help="AlpacaEval-format outputs (JSON list or JSONL)")
    source.add_argument("--annotations", nargs="+", default=None, metavar="FILE",
                        help="AlpacaEval annotation files to re-score (no judge calls)")
    p.add_argument("--suite", action="append", default=[], metavar="NAME",
                   help="suite to run (repeatable); default pairwise with --baseline")
    p.add_argument("--baseline", default=None, metavar="FILE", help="the baseline's outputs (pairwise, alpaca)")
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL (default: embedded toy judge)")
    p.add_argument("--judge-model", default=None)
    p.add_argument("--leaderboard", default=None, metavar="CSV",
                   help="also write AlpacaEval's leaderboard columns (alpaca suite or --annotations)")
    p.add_argument("--fastchat-judgments", default=None, metavar="DIR",
                   help="with --suite mtbench: also write the judgments as FastChat does, to "
                   "DIR/model_judgment/<judge>_single.jsonl (or _pair.jsonl), DIR being FastChat's data/mt_bench, "
                   "so its show_result.py reads them")
    p.add_argument("--allow-toy-judge", action="store_true",
                   help="let the embedded toy judge score items outside the toy world (it ties on them; tests only)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="judge.KEY=VALUE")
    p.add_argument("--length-unit", choices=["chars", "tokens"], default="chars")
    p.add_argument("--tokenizer", default=None, metavar="DIR|ID", help="counts tokens for --length-unit tokens "
                   "(default: the --model's)")
    p.add_argument("--instruction-difficulty", default=None, metavar="FILE",
                   help="with --annotations: AlpacaEval's instruction_difficulty CSV (index,instruction_difficulty) "
                   "for the per-model v1 LC GLM (lc_win_rate_v1)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--experiment", default="judge", help="MLflow experiment (default: judge)")
    p.add_argument("--no-track", action="store_true", help="log nothing to MLflow")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--results-dir", default="results")
    _common(p)


# Each command's code is imported only when that command runs: `harness report` and `harness ui` never
# pay for torch and transformers (seconds of start-up), which `sweep` needs.
COMMANDS = {"sweep": ("harness.run.commands", "sweep"), "train": ("harness.run.commands", "train"),
            "audit": ("harness.run.commands", "audit"), "judge": ("harness.judge_cmd.command", "cmd_judge"),
            "report": ("harness.report", "command"), "ui": ("harness.run.tracking", "ui_command"),
            "serve": ("harness.serve.endpoint", "serve_command"), "ls": ("harness.run.listing", "ls_command")}


def command(name: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs subcommand ``name``."""
    module, attr = COMMANDS[name]
    return getattr(importlib.import_module(module), attr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # CUDA's caching allocator grows segments in place instead of fragmenting into many: harness SFT on
    # an H200 ran 1.5x faster per step with it (benchmarks/RESULTS.md, "The GPU path"); an explicit
    # PYTORCH_CUDA_ALLOC_CONF wins.  Read at the first CUDA allocation, so setting it here is in time.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    if args.command not in ("report", "ui", "ls"):  # these never load a model; importing transformers costs seconds
        quiet_libraries()
    try:
        run = command(args.command)
        profile.mark("imported")  # HARNESS_PROFILE: start-up and the command's imports end here
        return run(args)
    except HarnessError as exc:
        if args.debug:
            raise
        say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        say(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return 1


QUICK_EXIT = ("train", "sweep")  # commands that load torch, transformers and MLflow, then only exit


def run() -> None:
    """The console script's entry: ``main``, then ``quick_exit`` after the commands in ``QUICK_EXIT``."""
    argv = sys.argv[1:]
    code = main(argv)
    # A profiler or tracer (cProfile, coverage) writes its data after main returns: exit the long way then.
    traced = sys.getprofile() is not None or sys.gettrace() is not None
    if build_parser().parse_args(argv).command in QUICK_EXIT and not os.environ.get("HARNESS_FULL_EXIT") and not traced:
        quick_exit(code)
    sys.exit(code)


def quick_exit(code: int) -> None:
    """Exit with ``code`` the short way: what exit would wait for still happens (other non-daemon threads
    finish, ``atexit`` handlers run: temporary directories, MLflow's and harness's own flushes, then the
    standard streams are flushed), but the interpreter's module-by-module teardown, 1-2 s with torch and
    MLflow loaded and nothing anyone reads, is skipped (``os._exit``).  ``HARNESS_FULL_EXIT=1`` turns it off."""
    try:
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


if __name__ == "__main__":
    run()
