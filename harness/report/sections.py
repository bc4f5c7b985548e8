"""The report's content as blocks: method statement, runs, per-axis tables, cost, figures; and its CSV."""

from __future__ import annotations

import math

import pandas as pd

from harness.report import plots
from harness.report.collect import TRAINING_KEYS, ReportData, outcome_metrics, run_key, training_runs
from harness.report.compare import AxisTable
from harness.report.per_prompt import response_lengths
from harness.report.render import Block, fmt_interval, fmt_number, fmt_p
from harness.report.stats import DEFAULT_B, DEFAULT_SEED

WIN_RATES = ("eval/pairwise/win_rate", "eval/alpaca/win_rate", "eval/mtbench/win_rate")


def method_statement(b: int = DEFAULT_B) -> str:
    return ("How to read this: a level's value is the mean over its seeds; [low, high] is the 95% t-interval "
            "over seeds (mean ± t(0.975, n-1)·s/√n), shown only with 2+ seeds. Each difference is level minus "
            "the reference level. It is tested with a paired bootstrap over prompts when every run on both "
            f"sides has per-prompt scores (judgments/ or outputs/ artifacts) that reproduce its logged metric. "
            f"The bootstrap uses B={b}, seed {DEFAULT_SEED}, a percentile CI and a two-sided p from the shifted "
            "null, and the per-prompt scores of a level are averaged over its seeds. Otherwise the test is "
            "Welch's t-test over seeds, with Welch-Satterthwaite df, which needs 2+ seeds per level. "
            "p (Holm) is Holm's step-down correction across all comparisons of the table.")


def blocks(data: ReportData, b: int = DEFAULT_B) -> list[Block]:
    out = [Block("h1", "Report: " + ", ".join(data.experiments)), Block("p", method_statement(b)),
           Block("h2", "Runs"), Block("table", runs_table(data))]
    excluded = data.rows[data.rows["status"] != "FINISHED"]
    if len(excluded):
        counts = excluded["status"].value_counts().to_dict()
        out.append(Block("p", "Not in the statistics (not finished): "
                         + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()) + "."))
    for table in data.tables:
        out += table_blocks(table)
    cost = cost_table(data)
    if len(cost):
        out += [Block("h2", "Cost"), Block("table", cost)]
    figs = [f for f in figures(data) if f is not None]
    if figs:
        out.append(Block("h2", "Figures"))
        out += [Block("figure", f) for f in figs]
    return out


def runs_table(data: ReportData) -> pd.DataFrame:
    """One row per report row: status, its axis levels, seed, and final metrics (``± se`` where logged)."""
    rows = data.rows
    out = pd.DataFrame({"run": rows["label"], "kind": rows["kind"], "status": rows["status"]})
    if len(data.experiments) > 1:
        out.insert(0, "experiment", rows["experiment"])
    axis_cols = sorted({c for axes in data.axes.values() for c in axes})
    for col in axis_cols + (["params.train.seed"] if "params.train.seed" in rows.columns else []):
        name = "seed" if col == "params.train.seed" else col[len("params."):]
        out[name] = rows[col].where(rows["kind"] == "trial", "").fillna("")
    for metric in outcome_metrics(rows, counts=True):
        se = rows.get(f"metrics.{metric}_se")
        out[metric] = [_with_se(v, None if se is None else se.iloc[i]) for i, v in enumerate(rows[f"metrics.{metric}"])]
    errors = rows.get("tags.harness.error")
    if errors is not None and errors.notna().any():
        out["error"] = errors.fillna("").str.slice(0, 80)
    return out


def _with_se(value, se) -> str:
    if se is None or (isinstance(se, float) and math.isnan(se)):
        return fmt_number(value)
    return f"{fmt_number(value)} ± {fmt_number(se)}"


def table_blocks(t: AxisTable) -> list[Block]:
    out = [Block("h2", t.title), Block("p", f"Reference level: {t.reference}.")]
    cells = t.cells.assign(value=[fmt_interval(m, lo, hi) for m, lo, hi in
                                  zip(t.cells["mean"], t.cells["ci_low"], t.cells["ci_high"])])
    wide = cells.pivot(index="level", columns="metric", values="value").reindex(t.levels).dropna(how="all")
    n = cells.groupby("level")["n"].max().reindex(wide.index)
    wide.insert(0, "seeds", n.astype(int))
    out.append(Block("table", wide.reset_index().rename(columns={"level": t.axis}).fillna("")))
    if len(t.comparisons):
        c = t.comparisons
        out.append(Block("p", f"Differences to {t.axis} = {t.reference} (95% CI); p adjusted by Holm "
                              f"over the {c['p'].notna().sum()} tested comparisons of this table."))
        out.append(Block("table", pd.DataFrame({
            t.axis: c["level"], "metric": c["metric"],
            "difference [95% CI]": [fmt_interval(d, lo, hi) for d, lo, hi in zip(c["diff"], c["ci_low"], c["ci_high"])],
            "test": c["test"], "n": c["n"], "p": [fmt_p(p) for p in c["p"]],
            "p (Holm)": [fmt_p(p) for p in c["p_holm"]]})))
    return out


def cost_table(data: ReportData) -> pd.DataFrame:
    """Wall time, mean tokens/s, tokens seen and peak memory per trial and stage run (whatever was logged)."""
    runs = training_runs(data.runs)
    multi = len(data.experiments) > 1
    records = []
    for _, r in runs.iterrows():
        wall = (r["end_time"] - r["start_time"]) / 1000 if pd.notna(r["end_time"]) and r["end_time"] else None
        tps = data.histories.get(run_key(r, multi), {}).get("train/tokens_per_s")
        records.append({
            "run": run_key(r, multi), "status": r["status"],
            "cache hit": r.get("tags.harness.cache_hit") if isinstance(r.get("tags.harness.cache_hit"), str) else "",
            "wall time (s)": fmt_number(wall) if wall is not None else r["status"].lower(),
            "tokens/s (mean)": fmt_number(sum(v for _, v in tps) / len(tps)) if tps else "",
            "tokens seen": fmt_number(r.get("metrics.train/tokens_seen")),
            "peak memory (MB)": fmt_number(r.get("metrics.train/peak_memory_mb"))})
    return pd.DataFrame.from_records(records)


def figures(data: ReportData):
    for key in TRAINING_KEYS[:3]:
        yield plots.training_curves(data.histories, key)
    for t in data.tables:
        yield plots.metric_by_level(t, list(dict.fromkeys(t.cells["metric"])))
    finished = data.rows[data.rows["status"] == "FINISHED"]
    yield from _frontier_figures(data, finished)
    for suite in _suites(finished):
        yield plots.pass_at_k_curves(_pass_at_k(finished, suite), suite)
        yield plots.length_distributions(
            {r["label"]: response_lengths(data.artifacts.get(r["run_id"], {}).get(suite, {}).get("outputs"))
             for _, r in finished.iterrows()}, suite)


def _frontier_figures(data: ReportData, rows: pd.DataFrame):
    win = next((m for m in WIN_RATES if f"metrics.{m}" in rows.columns), None)
    if win:
        kl = {r["label"]: final_kl(data, r, win.split("/")[1]) for _, r in rows.iterrows()}
        points = {k: (v, float(rows.loc[rows["label"] == k, f"metrics.{win}"].iloc[0])) for k, v in kl.items()
                  if v is not None}
        yield plots.scatter(points, "KL to the reference", win, "frontier-win_rate-kl",
                            f"Reward/KL frontier: {win} against the KL to the reference, per run.")
    if {"metrics.eval/alpaca/win_rate", "metrics.eval/alpaca/lc_win_rate"} <= set(rows.columns):
        points = {r["label"]: (float(r["metrics.eval/alpaca/win_rate"]), float(r["metrics.eval/alpaca/lc_win_rate"]))
                  for _, r in rows.iterrows()}
        yield plots.scatter(points, "raw win rate", "length-controlled win rate", "alpaca-raw-vs-lc",
                            "alpaca: raw against length-controlled win rate per run (dashed: y = x).", diagonal=True)


def final_kl(data: ReportData, row: pd.Series, suite: str) -> float | None:
    """KL of a run: ``eval/<suite>/kl`` when logged, else the last ``train/kl`` of the run that trained it last."""
    for col in (f"metrics.eval/{suite}/kl", "metrics.train/kl"):
        if pd.notna(row.get(col)):
            return float(row[col])
    stages = data.runs[(data.runs.get("tags.harness.stage_of") == row["label"])] \
        if "tags.harness.stage_of" in data.runs.columns else data.runs.iloc[:0]
    stages = stages.sort_values("start_time")
    if "metrics.train/kl" in stages.columns and len(stages) and pd.notna(stages["metrics.train/kl"].iloc[-1]):
        return float(stages["metrics.train/kl"].iloc[-1])
    return None


def _suites(rows: pd.DataFrame) -> list[str]:
    return sorted({c.split("/")[1] for c in rows.columns if c.startswith("metrics.eval/")})


def _pass_at_k(rows: pd.DataFrame, suite: str) -> dict[str, dict[int, float]]:
    prefix = f"metrics.eval/{suite}/pass_at_"
    cols = [c for c in rows.columns if c.startswith(prefix) and c[len(prefix):].isdigit()]
    return {r["label"]: {int(c[len(prefix):]): float(r[c]) for c in cols if pd.notna(r[c])} for _, r in rows.iterrows()}


def tidy_csv(data: ReportData) -> pd.DataFrame:
    """Every level cell and comparison of every table, one row each (``row_type`` level|comparison)."""
    frames = []
    for t in data.tables:
        info = {"experiment": t.experiment, "table": t.title, "axis": t.axis, "reference": t.reference}
        frames.append(t.cells.assign(row_type="level", **info))
        frames.append(t.comparisons.assign(row_type="comparison", **info))
    if not frames:
        return pd.DataFrame(columns=["experiment", "table", "axis", "reference", "row_type", "level", "metric"])
    front = ["experiment", "table", "axis", "reference", "row_type", "level", "metric"]
    out = pd.concat([f for f in frames if len(f)], ignore_index=True)
    return out[front + [c for c in out.columns if c not in front]]
