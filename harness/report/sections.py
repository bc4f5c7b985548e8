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
    return (
        "How to read this. A level's value is the mean over its seeds; [low, high] is the 95% t-interval over "
        "seeds (mean ± t(0.975, n-1)·s/√n), shown with 2+ seeds; for a rate it is clipped to [0, 1] and marked †. "
        "Only runs whose configuration differs in the seed alone are seeds of one level; runs that differ in "
        "anything else are other tables, named in the title by what differs. Each difference is level minus "
        "the reference level, on the prompts both levels share (a note says when that differs from the level "
        "means), with per-prompt scores when every run has them (judgments/ or outputs/ artifacts that "
        "reproduce its logged metric). With 2+ seeds per level and the same seeds on both sides: the seed-paired "
        "t on the per-seed differences (S-1 df; it covers seed-to-seed variance, conditional on the prompts, "
        "and with 2-5 seeds it is wide because it has only S-1 df, which is what those seeds support). With 2+ "
        "seeds and different seeds: a crossed bootstrap that resamples prompts (shared by both levels) and, per "
        f"level, seeds (B={b}, seed {DEFAULT_SEED}), studentized with Satterthwaite df. With one seed on a side: "
        "a paired bootstrap over prompts (percentile CI, p from the paired t over prompts), conditional on the "
        "trained checkpoint(s): seed-to-seed variance is not in it. Without per-prompt scores: Welch's t-test "
        "over seeds (2+ seeds per level). No p-value has a bootstrap floor. Multiplicity: p (Holm) controls the "
        "family-wise error rate at the table level over the primary family, the primary metrics (report.primary; "
        "default each suite's headline metric) x the table's levels; every other comparison is secondary, with "
        "p (BH), Benjamini-Hochberg's false discovery rate over the table's secondary comparisons. p (TOST) "
        "tests equivalence within ±report.equivalence_margin (two one-sided tests with the same SE and df).")


def blocks(data: ReportData, b: int = DEFAULT_B, plan: bool = False) -> list[Block]:
    out = [Block("h1", "Report: " + ", ".join(data.experiments)), Block("p", method_statement(b)),
           Block("h2", "Runs"), Block("table", runs_table(data))]
    excluded = data.rows[data.rows["status"] != "FINISHED"]
    if len(excluded):
        counts = excluded["status"].value_counts().to_dict()
        out.append(Block("p", "Not in the statistics (not finished): "
                         + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()) + "."))
    for table in data.tables:
        out += table_blocks(table, plan)
    cost = cost_table(data)
    if len(cost):
        out += [Block("h2", "Cost"), Block("table", cost)]
    counts = runs_table(data, columns="bookkeeping")
    if len(counts.columns) > 3:
        out += [Block("h2", "Counts and judge bookkeeping"),
                Block("p", "Per run: counts (prompts, wins, ties, errors, ...) and how the metrics were computed "
                           "(judge calls, cache hits, tokens, retries, fit sizes and coefficients). They are "
                           "not outcomes, so the tables above leave them out; runs.csv has them too."),
                Block("table", counts)]
    figs = [f for f in figures(data) if f is not None]
    if figs:
        out.append(Block("h2", "Figures"))
        out += [Block("figure", f) for f in figs]
    return out


def runs_table(data: ReportData, numeric: bool = False, columns: str = "outcomes") -> pd.DataFrame:
    """One row per report row: status, its axis levels, seed, and final metrics (``± se`` where logged).

    ``columns``: ``outcomes`` (the report's Runs table: the metrics the per-axis tables compare,
    ``outcome_metrics``), ``bookkeeping`` (run and status, then the counts and judge bookkeeping that
    leaves out) or ``all``.  ``numeric`` (runs.csv): each metric a number, its standard error in a
    ``<metric>_se`` column beside it.
    """
    rows = data.rows
    out = pd.DataFrame({"run": rows["label"], "kind": rows["kind"], "status": rows["status"]})
    if len(data.experiments) > 1:
        out.insert(0, "experiment", rows["experiment"])
    outcomes = outcome_metrics(rows)
    metrics = {"outcomes": outcomes, "all": outcome_metrics(rows, counts=True),
               "bookkeeping": [m for m in outcome_metrics(rows, counts=True) if m not in outcomes]}[columns]
    if columns == "bookkeeping":
        return _metric_columns(out, rows, metrics, numeric)
    axis_cols = sorted({c for axes in data.axes.values() for c in axes})
    for col in axis_cols + (["params.train.seed"] if "params.train.seed" in rows.columns else []):
        name = "seed" if col == "params.train.seed" else col[len("params."):]
        out[name] = rows[col].where(rows["kind"] == "trial", "").fillna("")
    out = _metric_columns(out, rows, metrics, numeric)
    errors = rows.get("tags.harness.error")
    if errors is not None and errors.notna().any():
        out["error"] = errors.fillna("").str.slice(0, 80)
    return out


def _metric_columns(out: pd.DataFrame, rows: pd.DataFrame, metrics: list[str], numeric: bool) -> pd.DataFrame:
    """``out`` with a column per metric (``value ± se`` as text, or numbers with a ``<metric>_se`` column)."""
    for metric in metrics:
        se = rows.get(f"metrics.{metric}_se")
        if numeric:
            out[metric] = pd.to_numeric(rows[f"metrics.{metric}"], errors="coerce").to_numpy()
            if se is not None:
                out[f"{metric}_se"] = pd.to_numeric(se, errors="coerce").to_numpy()
            continue
        out[metric] = [_with_se(v, None if se is None else se.iloc[i]) for i, v in enumerate(rows[f"metrics.{metric}"])]
    return out


def _with_se(value, se) -> str:
    if se is None or (isinstance(se, float) and math.isnan(se)):
        return fmt_number(value)
    return f"{fmt_number(value)} ± {fmt_number(se)}"


def table_blocks(t: AxisTable, plan: bool = False) -> list[Block]:
    out = [Block("h2", t.title), Block("p", f"Reference level: {t.reference}.")]
    marks = ["†" if isinstance(n, str) and n else "" for n in t.cells["ci_note"]]
    cells = t.cells.assign(value=[fmt_interval(m, lo, hi) + mark for m, lo, hi, mark in
                                  zip(t.cells["mean"], t.cells["ci_low"], t.cells["ci_high"], marks)])
    wide = cells.pivot(index="level", columns="metric", values="value").reindex(t.levels).dropna(how="all")
    n = cells.groupby("level")["n"].max().reindex(wide.index)
    wide.insert(0, "seeds", n.astype(int))
    out.append(Block("table", wide.reset_index().rename(columns={"level": t.axis}).fillna("")))
    if any(marks):
        out.append(Block("p", "† the t-interval over seeds left [0, 1] and is clipped to it (a rate cannot leave it)."))
    if len(t.comparisons):
        out += _comparison_blocks(t)
    if t.variance is not None and len(t.variance):
        out.append(Block("p", "Where the noise comes from (variance of one run's per-prompt scores, method of "
                              "moments): prompt, seed and residual (seed x prompt, including sampling) components; "
                              "with one seed the prompt column holds all of it. Sampling: the mean over prompts of "
                              "s²/n over a prompt's n > 1 samples (decoding noise; with one seed it is inside the "
                              "prompt column)."))
        v = t.variance
        out.append(Block("table", pd.DataFrame({
            t.axis: v["level"], "metric": v["metric"], "seeds": v["seeds"], "prompts": v["prompts"],
            "prompt var": [fmt_number(x, 5) for x in v["prompt_var"]],
            "seed var": [fmt_number(x, 5) for x in v["seed_var"]],
            "residual var": [fmt_number(x, 5) for x in v["residual_var"]],
            "of which sampling": [fmt_number(x, 5) for x in v["sampling_var"]]})))
    if plan and t.plan is not None and len(t.plan):
        p = t.plan
        out.append(Block("p", "Power and planning (primary comparisons; normal approximation, two-sided α = 0.05, "
                              "power 0.8, from the measured variance components): the minimum detectable effect "
                              "with these seeds and prompts, and the prompts (at these seeds) or seeds (at these "
                              "prompts) a target effect needs; inf: not reachable by that alone."))
        out.append(Block("table", pd.DataFrame({
            t.axis: p["level"], "metric": p["metric"], "seeds": p["seeds"], "prompts": p["prompts"],
            "MDE (80% power)": [fmt_number(x) for x in p["mde"]],
            "target effect": [fmt_number(x) for x in p["target_effect"]],
            "prompts needed": [fmt_number(x) if math.isfinite(x) else "inf" for x in p["prompts_needed"]],
            "seeds needed": [fmt_number(x) if math.isfinite(x) else "inf" for x in p["seeds_needed"]]})))
    return out


def _comparison_blocks(t: AxisTable) -> list[Block]:
    c = t.comparisons
    primary = c[c["family"] == "primary"]
    metrics = sorted(set(primary["metric"]))
    text = (f"Differences to {t.axis} = {t.reference} (95% CI). p (Holm): family-wise error rate over the "
            f"{primary['p'].notna().sum()} primary comparisons of this table ({', '.join(metrics) or 'none'} x levels); "
            f"p (BH): false discovery rate over its {c.loc[c['family'] == 'secondary', 'p'].notna().sum()} "
            "secondary comparisons.")
    columns = {
        t.axis: c["level"], "metric": c["metric"], "family": c["family"],
        "difference [95% CI]": [fmt_interval(d, lo, hi) for d, lo, hi in zip(c["diff"], c["ci_low"], c["ci_high"])],
        "test": c["test"], "n": c["n"], "p": [fmt_p(p) for p in c["p"]],
        "p (Holm)": [fmt_p(p) if f == "primary" else "" for p, f in zip(c["p_holm"], c["family"])],
        "p (BH)": [fmt_p(p) if f == "secondary" else "" for p, f in zip(c["p_bh"], c["family"])]}
    if c["margin"].notna().any():
        columns["p (TOST, ±margin)"] = [f"{fmt_p(p)} (±{fmt_number(m)})" if not math.isnan(m) else ""
                                        for p, m in zip(c["p_tost"], c["margin"])]
    notes = c["note"].fillna("")
    if (notes != "").any():
        columns["note"] = notes
    return [Block("p", text), Block("table", pd.DataFrame(columns))]


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
    families, estimators = training_families(data)
    for key in TRAINING_KEYS[:3]:
        ylabels = ({family: plots.estimator_label(key, estimator) for family, estimator in estimators.items()}
                   if key == "train/kl" else None)
        yield plots.training_curves(data.histories, key, families, ylabels)
    for t in data.tables:
        yield plots.metric_by_level(t, list(dict.fromkeys(t.cells["metric"])))
    finished = data.rows[data.rows["status"] == "FINISHED"]
    yield from _frontier_figures(data, finished)
    for suite in _suites(finished):
        yield plots.pass_at_k_curves(_pass_at_k(finished, suite), suite)
        yield plots.length_distributions(
            {r["label"]: response_lengths(data.artifacts.get(r["run_id"], {}).get(suite, {}).get("outputs"))
             for _, r in finished.iterrows()}, suite)


def training_families(data: ReportData) -> tuple[dict[str, str], dict[str, str | None]]:
    """Each training run's loss family (its ``harness.method`` tag: one curve panel per method), and
    each family's KL estimator (its runs' ``harness.kl_estimator`` tag; several are joined)."""
    runs = training_runs(data.runs)
    multi = len(data.experiments) > 1
    families, estimators = {}, {}
    for _, r in runs.iterrows():
        method = r.get("tags.harness.method")
        family = method if isinstance(method, str) else "runs"
        families[run_key(r, multi)] = family
        tag = r.get("tags.harness.kl_estimator")
        if isinstance(tag, str):
            known = estimators.get(family)
            estimators[family] = tag if known in (None, tag) else f"{known}; {tag}"
        else:
            estimators.setdefault(family, None)
    return families, estimators


def _frontier_figures(data: ReportData, rows: pd.DataFrame):
    win = next((m for m in WIN_RATES if f"metrics.{m}" in rows.columns), None)
    if win:
        kl = {r["label"]: final_kl(data, r, win.split("/")[1]) for _, r in rows.iterrows()}
        points = {k: (v, float(rows.loc[rows["label"] == k, f"metrics.{win}"].iloc[0])) for k, v in kl.items()
                  if v is not None}
        yield plots.scatter(points, "KL to the reference (k1 log-ratio, can be < 0)", win, "frontier-win_rate-kl",
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
    """Every level cell and comparison of every table, one row each (``row_type`` level|comparison), and
    each level's variance components (``variance``) and primary comparisons' planning (``plan``)."""
    frames = []
    for t in data.tables:
        info = {"experiment": t.experiment, "table": t.title, "axis": t.axis, "reference": t.reference}
        frames.append(t.cells.assign(row_type="level", **info))
        frames.append(t.comparisons.assign(row_type="comparison", **info))
        for kind, extra in (("variance", t.variance), ("plan", t.plan)):
            if extra is not None and len(extra):
                frames.append(extra.assign(row_type=kind, **info))
    if not frames:
        return pd.DataFrame(columns=["experiment", "table", "axis", "reference", "row_type", "level", "metric"])
    front = ["experiment", "table", "axis", "reference", "row_type", "level", "metric"]
    out = pd.concat([f for f in frames if len(f)], ignore_index=True)
    return out[front + [c for c in out.columns if c not in front]]
