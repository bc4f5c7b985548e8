"""``harness sweep``, ``harness train`` and ``harness audit``: from parsed arguments to the sweep or the audit."""

from __future__ import annotations

import shlex

from harness.config.grid import dry_run_lines, expand_trials, single_trial
from harness.config.spec import load_spec
from harness.console import say
from harness.data.audit import audit_data, format_table, to_json
from harness.data.load import fingerprint
from harness.errors import HarnessError
from harness.run.sweep import run_sweep
from harness.train.models import match_threads, tokenizer_only


def sweep(args) -> int:
    """Every trial of the spec's grid; finished trials are skipped unless ``--force``."""
    spec = load_spec(args.spec, args.overrides)
    trials = expand_trials(spec, fingerprint)
    if args.dry_run:
        print("\n".join(dry_run_lines(trials)))
        return 0
    max_parallel = args.max_parallel if args.max_parallel is not None or args.executor == "ray" else 1
    match_threads()  # this process's trials; parallel workers get their share of the cores (harness.run.sweep)
    try:
        summary = run_sweep(spec, trials, tracking_uri=args.tracking_uri, force=args.force, echo=say,
                            executor=args.executor, max_parallel=max_parallel, ray_address=args.ray_address)
    except KeyboardInterrupt:
        return _interrupted(args, "sweep")
    return _finish(summary)


def train(args) -> int:
    """Exactly one trial (no ablate expansion), always run."""
    spec = load_spec(args.spec, args.overrides, ablating=False)
    if spec.ablate or len(spec.seeds) > 1:
        say(f"note: harness train runs one trial; ignoring ablate and using seed {spec.seeds[0]}")
    trials = [single_trial(spec, fingerprint)]
    match_threads()
    try:
        summary = run_sweep(spec, trials, tracking_uri=args.tracking_uri, force=True, echo=say)
    except KeyboardInterrupt:
        return _interrupted(args, "train")
    return _finish(summary)


def _interrupted(args, command: str) -> int:
    """Ctrl-C: the interrupted trial is marked KILLED; say how to go on (exit code 130, as the shell's)."""
    again = ["harness", command, args.spec] + [a for o in args.overrides for a in ("--set", o)]
    if args.tracking_uri:
        again += ["--tracking-uri", args.tracking_uri]
    if getattr(args, "executor", "local") != "local":
        again += ["--executor", args.executor] + (["--ray-address", args.ray_address] if args.ray_address else [])
    if getattr(args, "max_parallel", None) is not None:
        again += ["--max-parallel", str(args.max_parallel)]
    what = "finished trials are skipped, the interrupted one resumes" if command == "sweep" else "it trains again"
    say(f"interrupted; to resume: {shlex.join(again)} ({what})")
    return 130


def _finish(summary) -> int:
    say(f"{len(summary.ran)} ran, {len(summary.skipped)} skipped, {len(summary.failed)} failed")
    if summary.failed:
        for trial_id, message in summary.failed.items():
            say(f"  {trial_id}: {message}")
        return 1
    return 0


def audit(args) -> int:
    """The preference-data audit, as a table or JSON on stdout."""
    if not 0 < args.near_threshold <= 1:
        raise HarnessError(f"--near-threshold: must be in (0, 1], got {args.near_threshold}")
    report = audit_data(args.data, tokenizer_only(args.model, "--model"), args.eval, args.near_threshold)
    title = f"audit of {args.data} (tokenizer of {args.model}" + (f"; eval {args.eval})" if args.eval else ")")
    print(to_json(report) if args.format == "json" else format_table(report, title))
    return 0
