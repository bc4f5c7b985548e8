"""``harness report`` v1: one row per trial with the params that vary and its eval metrics.

Rows come from ``mlflow.search_runs``: every trial run (tag
``harness.trial_id``) and, for multi-stage trials evaluated after every
stage, each stage run that has eval metrics (named ``TRIAL/STAGE``).  A
metric ``X`` with a companion ``X_se`` is shown as ``mean ± se``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.tracking import Store

HIDDEN_PARAMS = ("train.seed",)  # shown through the seed column instead


def runs_frame(store: Store, experiments: list[str]) -> pd.DataFrame:
    """Every run of ``experiments`` as one row: ``experiment``, ``status``, ``params.*``, ``metrics.*``, ``tags.*``.

    Uses an explicit client: ``mlflow.set_tracking_uri`` would also set the
    process's ``MLFLOW_TRACKING_URI`` and redirect later commands.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.tracking_uri)
    records = []
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise HarnessError(f"experiment {name!r} not found in {store.tracking_uri}")
        for run in client.search_runs([exp.experiment_id], max_results=50_000):
            record = {"experiment": name, "run_id": run.info.run_id, "status": run.info.status}
            record.update({f"params.{k}": v for k, v in run.data.params.items()})
            record.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
            record.update({f"tags.{k}": v for k, v in run.data.tags.items()})
            records.append(record)
    return pd.DataFrame.from_records(records)


def trial_table(store: Store, experiments: list[str]) -> pd.DataFrame:
    """A DataFrame with one row per trial (and evaluated stage) of ``experiments``."""
    runs = runs_frame(store, experiments)
    if runs.empty:
        raise HarnessError(f"no runs found for experiment(s) {experiments} in {store.tracking_uri}")
    runs["is_trial"] = _column(runs, "tags.harness.trial_id").notna()
    eval_cols = [c for c in runs.columns if c.startswith("metrics.eval/")]
    has_eval = runs[eval_cols].notna().any(axis=1) if eval_cols else False
    runs["is_stage_eval"] = _column(runs, "tags.harness.stage").notna() & has_eval
    rows = runs[runs["is_trial"] | runs["is_stage_eval"]].copy()
    if rows.empty:
        raise HarnessError(f"experiment(s) {experiments} have no trial runs yet")
    rows["trial"] = rows["tags.harness.trial_id"].where(
        rows["is_trial"], _column(rows, "tags.harness.stage_of") + "/" + _column(rows, "tags.harness.stage"))
    return rows.sort_values(["experiment", "trial"]).reset_index(drop=True)


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series([None] * len(df), index=df.index, dtype=object)


def varying_params(rows: pd.DataFrame) -> list[str]:
    """Param columns whose value differs between trial runs (the ablation axes)."""
    trials = rows[rows["is_trial"] & (rows["trial"] != "base")]
    cols = [c for c in rows.columns if c.startswith("params.") and c[len("params."):] not in HIDDEN_PARAMS]
    return [c for c in cols if trials[c].nunique(dropna=False) > 1]


def summary_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """The report table: trial, status, varying params, final eval metrics (``mean ± se``)."""
    out = pd.DataFrame({"trial": rows["trial"], "status": rows["status"]})
    if rows["experiment"].nunique() > 1:
        out.insert(0, "experiment", rows["experiment"])
    ablated = rows["is_trial"] & (rows["trial"] != "base")  # base and stage rows have no axis values
    for col in varying_params(rows):
        out[col[len("params."):]] = rows[col].where(ablated, "").fillna("")
    metrics = sorted(c for c in rows.columns if c.startswith("metrics.eval/") and not c.endswith("_se"))
    for col in metrics:
        name = col[len("metrics."):]
        se = rows.get(col + "_se")
        out[name] = [_fmt(v, None if se is None else se.iloc[i]) for i, v in enumerate(rows[col])]
    return out


def _fmt(value, se) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if se is None or (isinstance(se, float) and math.isnan(se)):
        return f"{value:.4g}"
    return f"{value:.3f} ± {se:.3f}"


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    cells = [[str(c) for c in df.columns]] + [["" if v is None else str(v) for v in row] for row in df.values]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    line = lambda r: "| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


def write_report(store: Store, experiments: list[str], out_dir: Path, fmt: str = "md") -> str:
    """Write report files into ``out_dir`` and return the markdown table."""
    table = summary_frame(trial_table(store, experiments))
    markdown = to_markdown(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt in ("md", "all"):
        (out_dir / "report.md").write_text(f"# {', '.join(experiments)}\n\n{markdown}\n")
    table.to_csv(out_dir / "report.csv", index=False)
    if fmt in ("html", "all"):
        (out_dir / "report.html").write_text(table.to_html(index=False))
    return markdown
