"""``harness ls [EXPERIMENT]``: what is in the tracking store, without opening the MLflow UI.

Without an experiment: one row per experiment (trials by status, the newest start).  With one:
one row per trial run (or ``harness judge`` run, one per generator), newest first, with its status,
sweep, headline metrics (``eval/<suite>/<metric>`` without standard errors and judge counters) and
checkpoint path (``harness.checkpoint``).
"""

from __future__ import annotations

import difflib
import json
import time
from collections import Counter

from harness.console import table
from harness.errors import HarnessError
from harness.run.tracking import Tracker, require_reachable, resolve_store

SKIPPED_METRIC_PARTS = ("_se", "judge_", "standard_error")


def _when(ms: int | None) -> str:
    return "-" if not ms else time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000))


def headline(metrics: dict) -> dict:
    """The ``eval/<suite>/<metric>`` metrics a reader looks at first (no SEs, no judge counters, no sub-keys)."""
    out = {}
    for key, value in sorted(metrics.items()):
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "eval" and not any(s in parts[2] for s in SKIPPED_METRIC_PARTS):
            out[f"{parts[1]}/{parts[2]}"] = value
    return out


def listed_runs(tracker: Tracker, experiment_id: str) -> list:
    """The experiment's trial runs (``harness.trial_id``) and judge-only runs (``harness judge``, tag
    ``harness.role = judge``), newest first."""
    found = []
    for query in ("tags.`harness.trial_id` != ''", "tags.`harness.role` = 'judge'"):
        found += tracker.client.search_runs([experiment_id], query, max_results=50000)
    return sorted(found, key=lambda r: r.info.start_time or 0, reverse=True)


def trial_rows(tracker: Tracker, experiment_id: str) -> list[dict]:
    """One row per trial (or judged generator, its sweep shown as ``judge``)."""
    rows = []
    for run in listed_runs(tracker, experiment_id):
        tags = run.data.tags
        judged = "harness.trial_id" not in tags
        rows.append({"trial": tags.get("harness.generator", run.info.run_name) if judged else tags["harness.trial_id"],
                     "status": run.info.status, "sweep": "judge" if judged else tags.get("harness.sweep_id", "-"),
                     "started": _when(run.info.start_time),
                     **headline(run.data.metrics), "checkpoint": tags.get("harness.checkpoint", "-")})
    return rows


def experiment_rows(tracker: Tracker) -> list[dict]:
    rows = []
    for exp in tracker.client.search_experiments():
        runs = listed_runs(tracker, exp.experiment_id)
        if not runs:
            continue
        counts = Counter(r.info.status for r in runs)
        rows.append({"experiment": exp.name, "trials": len(runs),
                     **{s.lower(): counts.get(s, 0) for s in ("FINISHED", "RUNNING", "FAILED")},
                     "newest": _when(runs[0].info.start_time)})
    return rows


def ls_command(args) -> int:
    tracker = Tracker(resolve_store(args.tracking_uri, None, None, args.results_dir))
    require_reachable(tracker)
    if args.experiment is None:
        rows = experiment_rows(tracker)
        title = f"experiments in {tracker.store.tracking_uri}"
    else:
        exp = tracker.client.get_experiment_by_name(args.experiment)
        if exp is None:
            names = [e.name for e in tracker.client.search_experiments() if e.name != "Default"]
            close = difflib.get_close_matches(args.experiment, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise HarnessError(f"no experiment {args.experiment!r} in {tracker.store.tracking_uri} "
                               f"({hint}experiments: {', '.join(names) or 'none'})")
        rows = trial_rows(tracker, exp.experiment_id)
        title = f"trials of {args.experiment}, newest first"
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif rows:
        print(table(rows, title))
    else:
        print(f"{title}: none")
    return 0
