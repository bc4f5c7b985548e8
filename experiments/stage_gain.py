"""Gain of a sweep's last stage over an earlier stage, paired within each seed.

    python experiments/stage_gain.py EXPERIMENT [--stage sft] [--metric eval/arith/pass_at_1]
                                     [--also METRIC] [--tracking-uri URI ...] [--contrast A B ...]

For every trial of EXPERIMENT (one run per trial configuration, as in the
report), reads the metric of the trial run (its last stage's evaluation) and
of its child stage run named ``--stage`` (the start that stage trained from),
and prints one row per ablation level: the per-seed values, the mean paired
difference over seeds and its 95% Student-t interval,
mean +- t_{0.975, n-1} * sd / sqrt(n).  Several ``--tracking-uri`` values
pool stores that ran different seeds of the same spec (``--set seeds=[k]``),
so trial ids agree across them.  The README's "Measured effects" tables come from
this script.

``--contrast A B`` adds the paired difference of the end metric (and of
``--also``) between levels A and B, e.g. sum- minus mean-reduced DPO on the
same seeds' starts.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

from mlflow.tracking import MlflowClient

from harness.report.frame import trial_config
from harness.report.stats import summarize


def collect(uri: str, experiment: str, stage: str, metrics: list[str]) -> dict:
    """{(level, seed): {"start": {m: v}, "end": {m: v}}} from one store."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"{uri}: no experiment {experiment!r}")
    runs = client.search_runs([exp.experiment_id], max_results=50000)
    by_id = {r.info.run_id: r for r in runs}
    # One trial run per configuration, by the report's rule: two sweeps of the
    # experiment (say, before and after an axis was added) log it twice.
    kept = {}
    trials = [r for r in runs if "harness.trial_id" in r.data.tags]
    for r in sorted(trials, key=lambda r: (r.info.status == "FINISHED", r.info.start_time), reverse=True):
        kept.setdefault(trial_config(r.data.tags["harness.trial_id"]), r.info.run_id)
    kept_ids = set(kept.values())
    out = {}
    for run in runs:
        parent = run.data.tags.get("mlflow.parentRunId")
        if run.data.tags.get("harness.stage") != stage or parent not in kept_ids:
            continue
        trial = by_id[parent]
        name = trial.data.tags["harness.trial_id"]
        match = re.fullmatch(r"(?:(.*)-)?seed(\d+)-[0-9a-f]{8}", name)
        if not match:
            continue
        level, seed = match.group(1) or "(no ablation)", int(match.group(2))
        out[(level, seed)] = {
            "start": {m: run.data.metrics.get(m) for m in metrics},
            "end": {m: trial.data.metrics.get(m) for m in metrics},
        }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment")
    ap.add_argument("--stage", default="sft")
    ap.add_argument("--metric", default="eval/arith/pass_at_1")
    ap.add_argument("--also", default="eval/arith/response_length", help="a second metric shown per seed")
    ap.add_argument("--tracking-uri", action="append", default=None)
    ap.add_argument("--contrast", nargs=2, action="append", metavar=("A", "B"),
                    help="paired end-metric difference, level A minus level B")
    args = ap.parse_args(argv)
    rows: dict = {}
    for uri in args.tracking_uri or ["sqlite:///results/mlflow.db"]:
        rows.update(collect(uri, args.experiment, args.stage, [args.metric, args.also]))
    levels = defaultdict(dict)
    for (level, seed), v in rows.items():
        levels[level][seed] = v
    print(f"| level | {args.stage} → end, per seed ({args.metric}) | {args.also}, per seed | "
          "mean gain | 95% t-interval |")
    print("|---|---|---|---|---|")
    for level, seeds in levels.items():
        order = sorted(seeds)
        values = [(seeds[s]["start"][args.metric], seeds[s]["end"][args.metric]) for s in order]
        if any(a is None or b is None for a, b in values):
            print(f"| {level} | incomplete | | | |")
            continue
        gain = summarize([b - a for a, b in values])  # the report's t-interval over seeds
        cells = ", ".join(f"{a:.3f} → {b:.3f}" for a, b in values)
        also = ", ".join(f"{_num(seeds[s]['start'][args.also])} → {_num(seeds[s]['end'][args.also])}"
                         for s in order)
        print(f"| {level} | {cells} | {also} | {gain.mean:+.3f} | [{gain.ci_low:+.3f}, {gain.ci_high:+.3f}] |")
    for a, b in args.contrast or []:
        print_contrast(levels, a, b, [args.metric, args.also])


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def print_contrast(levels: dict, a: str, b: str, metrics: list[str]) -> None:
    """End metric of level a minus level b, paired by seed, with the 95% t-interval over seeds."""
    for name in (a, b):
        if name not in levels:
            raise SystemExit(f"--contrast: no level {name!r}; levels: {', '.join(levels)}")
    seeds = sorted(set(levels[a]) & set(levels[b]))
    print(f"\n{a} − {b}, paired over seeds {seeds}:")
    for m in metrics:
        diffs = [levels[a][s]["end"][m] - levels[b][s]["end"][m] for s in seeds]
        d = summarize(diffs)
        print(f"  {m}: per seed {', '.join(f'{x:+.3f}' for x in diffs)}; "
              f"mean {d.mean:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}]")


if __name__ == "__main__":
    main()
