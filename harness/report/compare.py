"""Per-axis comparison tables: every metric by level, differences to a reference level, tests, Holm.

A table holds one ablation axis with every other axis fixed (one table per
combination of the other axes' levels), so a difference is never confounded
with another axis.  Replicates of a level are its seeds.  A difference uses
the paired bootstrap over prompts when every run on both sides has per-prompt
scores that reproduce its logged metric (``per_prompt``); otherwise Welch's
t-test over seeds.  Holm's correction runs over all comparisons of one table.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import pandas as pd

from harness.report import stats
from harness.report.per_prompt import reproduces

MODEL_AXIS = "model"


@dataclass
class AxisTable:
    experiment: str
    axis: str  # display name: the dotted key without "params.", or "model"
    fixed: dict[str, str]  # the other axes' values held fixed
    reference: str
    levels: list[str]
    cells: pd.DataFrame  # level, metric, n, mean, std, ci_low, ci_high
    comparisons: pd.DataFrame  # level, metric, diff, ci_low, ci_high, test, n, p, p_holm
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        fixed = ", ".join(f"{k}={v}" for k, v in self.fixed.items())
        return f"{self.experiment}: {self.axis}" + (f" ({fixed})" if fixed else "")


@dataclass
class Group:
    """One level of a table: its runs (report rows) and their per-prompt scores by metric."""

    level: str
    rows: pd.DataFrame
    prompts: list[dict[str, dict[str, float] | None]]  # per run: metric -> {id: value} or None


def axis_tables(rows: pd.DataFrame, axes: dict[str, list[str]], metrics: list[str], prompt_scores: dict,
                references: dict[str, str], b: int = stats.DEFAULT_B) -> list[AxisTable]:
    """Tables for every axis of one experiment's finished trials (``rows``), one per slice of the other axes."""
    tables = []
    for axis, levels in axes.items():
        others = [a for a in axes if a != axis]
        for fixed_values in itertools.product(*(axes[a] for a in others)):
            mask = pd.Series(True, index=rows.index)
            for a, v in zip(others, fixed_values):
                mask &= rows[a] == v
            part = rows[mask]
            groups = [_group(lv, part[part[axis] == lv], metrics, prompt_scores) for lv in levels]
            groups = [g for g in groups if len(g.rows)]
            if len(groups) < 2:
                continue
            name = axis[len("params."):]
            fixed = {a[len("params."):]: v for a, v in zip(others, fixed_values)}
            tables.append(build_table(rows["experiment"].iloc[0], name, fixed, groups, metrics,
                                      references.get(name), b))
    return tables


def model_table(experiment: str, rows: pd.DataFrame, metrics: list[str], prompt_scores: dict,
                reference: str | None, b: int = stats.DEFAULT_B, axis: str = MODEL_AXIS,
                fixed: dict | None = None) -> AxisTable | None:
    """One row per model (judge-only runs, or every evaluated row of a sweep), compared to ``reference``."""
    groups = [_group(label, rows[rows["label"] == label], metrics, prompt_scores) for label in rows["label"]]
    if len(groups) < 2:
        return None
    return build_table(experiment, axis, fixed or {}, groups, metrics, reference, b)


def _group(level: str, rows: pd.DataFrame, metrics: list[str], prompt_scores: dict) -> Group:
    prompts = [{m: prompt_scores.get((rid, m)) for m in metrics} for rid in rows["run_id"]]
    return Group(level, rows, prompts)


def build_table(experiment: str, axis: str, fixed: dict, groups: list[Group], metrics: list[str],
                reference: str | None, b: int) -> AxisTable:
    levels = [g.level for g in groups]
    reference = levels[0] if reference is None else reference
    ref = next(g for g in groups if g.level == reference)
    cells, comps = [], []
    for g in groups:
        for m in metrics:
            values = _values(g, m)
            s = stats.summarize(values)
            cells.append({"level": g.level, "metric": m, "n": s.n, "mean": s.mean, "std": s.std,
                          "ci_low": s.ci_low, "ci_high": s.ci_high})
            if g is not ref and s.n and len(_values(ref, m)):
                c = compare(g, ref, m, b)
                comps.append({"level": g.level, "metric": m, "diff": c.diff, "ci_low": c.ci_low,
                              "ci_high": c.ci_high, "test": c.test, "n": c.n, "p": c.p})
    comparisons = pd.DataFrame(comps, columns=["level", "metric", "diff", "ci_low", "ci_high", "test", "n", "p"])
    comparisons["p_holm"] = stats.holm(comparisons["p"].tolist()) if len(comparisons) else []
    cells = pd.DataFrame(cells, columns=["level", "metric", "n", "mean", "std", "ci_low", "ci_high"])
    cells = cells[cells["n"] > 0].reset_index(drop=True)
    return AxisTable(experiment, axis, fixed, reference, levels, cells, comparisons)


def _values(g: Group, metric: str) -> list[float]:
    col = f"metrics.{metric}"
    if col not in g.rows.columns:
        return []
    return [float(v) for v in g.rows[col] if v is not None and not math.isnan(v)]


def compare(g: Group, ref: Group, metric: str, b: int) -> stats.Comparison:
    """Paired bootstrap over prompts when both sides decompose into per-prompt scores, else Welch over seeds."""
    a, r = level_prompt_scores(g, metric), level_prompt_scores(ref, metric)
    if a is not None and r is not None:
        shared = sorted(set(a) & set(r))
        return stats.paired_bootstrap([a[k] for k in shared], [r[k] for k in shared], b=b)
    return stats.welch(_values(g, metric), _values(ref, metric))


def level_prompt_scores(g: Group, metric: str) -> dict[str, float] | None:
    """Per-prompt scores of a level: the mean over its runs (seeds) on the prompts every run has.

    None unless every run's scores reproduce its logged value of ``metric``.
    """
    per_run = []
    col = f"metrics.{metric}"
    logged = g.rows[col].tolist() if col in g.rows.columns else [None] * len(g.rows)
    for value, prompts in zip(logged, g.prompts):
        values = prompts.get(metric)
        if values is None or not reproduces(values, value):
            return None
        per_run.append(values)
    if not per_run:
        return None
    shared = set.intersection(*(set(v) for v in per_run))
    return {k: math.fsum(v[k] for v in per_run) / len(per_run) for k in shared}
