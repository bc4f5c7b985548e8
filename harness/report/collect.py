"""Gathering everything a report needs from the store: rows, per-prompt scores, histories, tables."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.report import frame
from harness.report.compare import MODEL_AXIS, AxisTable, Policy, axis_tables, model_table
from harness.report.per_prompt import per_prompt_values, sampling_variance
from harness.report.stats import DEFAULT_B
from harness.run.tracking import Store

TRAINING_KEYS = ("train/loss", "train/rewards/margin", "train/kl", "train/tokens_per_s")
VS_BASE_AXIS = "run (vs base)"
# Counts and interval companions: shown in the runs table, not compared as outcomes.
COUNT_METRICS = ("num_prompts", "n", "errors", "wins", "ties", "losses", "n_harmful", "n_benign")
COMPANION_SUFFIXES = ("_se", "_low", "_high", "standard_error")
# Bookkeeping about how a metric was computed (judge calls, cache hits, the joint LC fit's
# size and its joint SE, the style-controlled fit's coefficients), not an outcome: shown with the
# counts in the report's "Counts and judge bookkeeping" table and in runs.csv, never compared.
BOOKKEEPING_PREFIXES = ("judge_", "lc_joint_models", "lc_standard_error_joint", "style_coef")


@dataclass
class ReportData:
    experiments: list[str]
    runs: pd.DataFrame  # every run of the experiments
    rows: pd.DataFrame  # report rows (frame.report_rows)
    axes: dict[str, dict[str, list[str]]]  # experiment -> axis column -> levels
    policies: dict[str, Policy] = field(default_factory=dict)  # experiment -> report.primary / margins
    tables: list[AxisTable] = field(default_factory=list)
    artifacts: dict[str, dict] = field(default_factory=dict)  # run_id -> suite -> {judgments, outputs}
    histories: dict[str, dict[str, list]] = field(default_factory=dict)  # run label -> key -> [(step, v)]


def parse_references(items: list[str]) -> dict[str, str]:
    """``--reference AXIS=LEVEL`` values as a dict (axis without the ``params.`` prefix)."""
    out = {}
    for item in items:
        axis, sep, level = item.partition("=")
        if not sep or not axis or not level:
            raise HarnessError(f"--reference {item!r}: expected AXIS=LEVEL, e.g. method.beta=0.1")
        out[axis.removeprefix("params.")] = level
    return out


def outcome_metrics(rows: pd.DataFrame, counts: bool = False) -> list[str]:
    """Eval and held-out (``val/``) metric names that some row has, without interval companions.

    Counts (``COUNT_METRICS``) and bookkeeping (``BOOKKEEPING_PREFIXES``) are left out unless ``counts``.
    """
    names = [c[len("metrics."):] for c in rows.columns
             if c.startswith(("metrics.eval/", "metrics.val/")) and rows[c].notna().any()]
    return sorted(n for n in names if not n.endswith(COMPANION_SUFFIXES) and (counts or is_outcome(n)))


def is_outcome(name: str) -> bool:
    """Not a count (``eval/mtbench/turn1/n``) and no part bookkeeping (``eval/pairwise/style_coef/length``)."""
    parts = name.split("/")[1:]
    return parts[-1] not in COUNT_METRICS and not any(p.startswith(BOOKKEEPING_PREFIXES) for p in parts)


def collect(store: Store, experiments: list[str], references: dict[str, str] | None = None,
            b: int = DEFAULT_B, target_effect: float | None = None) -> ReportData:
    client = frame.client_for(store)
    runs = frame.runs_frame(client, experiments)
    if runs.empty:
        raise HarnessError(f"no runs found for experiment(s) {experiments} in {store.tracking_uri}")
    runs = frame.latest_trials(runs)
    rows = frame.report_rows(runs)
    if rows.empty:
        raise HarnessError(f"experiment(s) {experiments} have no trial or evaluated runs yet")
    axes, policies = {}, {}
    for exp in experiments:
        trials = rows[(rows["experiment"] == exp) & (rows["kind"] == "trial")]
        spec = frame.sweep_spec(client, runs, exp)
        policies[exp] = report_policy(spec, target_effect)
        declared = frame.axes_and_levels(trials, spec)
        finished = trials[trials["status"] == "FINISHED"]
        axes[exp] = {**declared, **frame.config_axes(finished, declared)}
    data = ReportData(experiments, runs, rows, axes, policies=policies)
    with tempfile.TemporaryDirectory() as tmp:
        for i, row in rows.iterrows():
            data.artifacts[row["run_id"]] = frame.suite_artifacts(row["artifact_uri"], row["label"], Path(tmp) / str(i))
    data.histories = training_histories(client, runs, rows)
    refs = dict(references or {})
    check_references(refs, data)
    scores = prompt_scores(data)
    for exp in experiments:
        data.tables += experiment_tables(data, exp, scores, refs, b)
    return data


def report_policy(spec: dict | None, target_effect: float | None = None) -> Policy:
    """The spec's ``report.primary`` and ``report.equivalence_margin`` (defaults without a logged spec)."""
    section = (spec or {}).get("report") or {}
    primary = section.get("primary")
    return Policy(tuple(primary) if primary is not None else None,
                  {k: float(v) for k, v in (section.get("equivalence_margin") or {}).items()}, target_effect)


def prompt_scores(data: ReportData) -> dict[tuple[str, str], dict[str, float]]:
    """``(run_id, metric) -> {prompt id: value}`` for every eval metric a run's artifacts decompose, and
    ``(run_id, metric, "sampling") -> sampling variance`` where prompts have several samples."""
    out = {}
    metrics = outcome_metrics(data.rows)
    for _, row in data.rows.iterrows():
        for metric in metrics:
            parts = metric.split("/")
            if parts[0] != "eval" or len(parts) != 3:
                continue
            suite_arts = data.artifacts.get(row["run_id"], {}).get(parts[1])
            if suite_arts:
                where = f"run {row['label']} ({row['run_id'][:8]}) "
                values = per_prompt_values(parts[1], parts[2], suite_arts, where)
                if values is not None:
                    out[(row["run_id"], metric)] = values
                    sampling = sampling_variance(parts[2], suite_arts)
                    if sampling is not None:
                        out[(row["run_id"], metric, "sampling")] = sampling
    return out


def experiment_tables(data: ReportData, exp: str, scores: dict, refs: dict, b: int) -> list[AxisTable]:
    rows = data.rows[data.rows["experiment"] == exp]
    finished = rows[rows["status"] == "FINISHED"]
    metrics = outcome_metrics(finished)
    trials = finished[finished["kind"] == "trial"]
    policy = data.policies.get(exp)
    tables = axis_tables(trials, data.axes[exp], metrics, scores, refs, b, policy) if len(trials) else []
    models = finished[finished["kind"] == "model"]
    if len(models):
        t = model_table(exp, models, metrics, scores, refs.get(MODEL_AXIS), b, policy=policy)
        tables += [t] if t else []
    bases = finished[finished["kind"] == "base"]
    labels = dict(zip(bases.index, frame.differences(bases, frame.base_key)))
    for i, base in bases.iterrows():
        # each base is compared only with the runs evaluated as it was (same prompts, same decoding)
        same = [frame.same_eval(r, base) for _, r in finished.iterrows()]
        evaluated = finished[finished["kind"].isin(["trial", "stage"]) & pd.Series(same, index=finished.index)]
        evaluated = pd.concat([finished.loc[[i]], evaluated])
        fixed = labels[i] if len(bases) > 1 else {}
        t = model_table(exp, evaluated, metrics, scores, base["label"], b, axis=VS_BASE_AXIS, fixed=fixed,
                        policy=policy)
        tables += [t] if t else []
    return tables


def check_references(refs: dict[str, str], data: ReportData) -> None:
    """Every ``--reference`` names an axis of some experiment and one of its levels."""
    known: dict[str, set[str]] = {}
    for exp_axes in data.axes.values():
        for col, levels in exp_axes.items():
            known.setdefault(col[len("params."):], set()).update(levels)
    models = data.rows[data.rows["kind"] == "model"]
    if len(models):
        known[MODEL_AXIS] = set(models["label"])
    for axis, level in refs.items():
        if axis not in known:
            raise HarnessError(f"--reference {axis}={level}: {axis!r} is not an ablation axis here "
                               f"(axes: {sorted(known) or 'none'})")
        if level not in known[axis]:
            raise HarnessError(f"--reference {axis}={level}: no such level (levels: {sorted(known[axis])})")


def training_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Trial and stage runs (the ones that train or hold a trial's whole wall time), labelled."""
    trial_id = frame.column(runs, "tags.harness.trial_id")
    stage = frame.column(runs, "tags.harness.stage")
    out = runs[trial_id.notna() | stage.notna()].copy()
    out["label"] = [f"{r.get('tags.harness.stage_of')}/{r['tags.harness.stage']}"
                    if isinstance(r.get("tags.harness.stage"), str) else r["tags.harness.trial_id"]
                    for _, r in out.iterrows()]
    return out.sort_values(["experiment", "label"]).reset_index(drop=True)


def training_histories(client, runs: pd.DataFrame, rows: pd.DataFrame) -> dict[str, dict[str, list]]:
    """label -> metric -> [(step, value)] for each run that logged training metrics."""
    out = {}
    multi = len(set(runs["experiment"])) > 1
    for _, run in training_runs(runs).iterrows():
        keys = [k for k in TRAINING_KEYS if pd.notna(run.get(f"metrics.{k}"))]
        if keys:
            out[run_key(run, multi)] = {k: frame.metric_history(client, run["run_id"], k) for k in keys}
    return out


def run_key(run: pd.Series, multi: bool) -> str:
    """A training run's name in curves and the cost table: its label, prefixed by the experiment when several."""
    return f"{run['experiment']}:{run['label']}" if multi else run["label"]
