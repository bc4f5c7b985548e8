"""Per-axis comparison tables: every metric by level, differences to a reference level, tests, multiplicity.

A table holds one ablation axis with every other axis fixed (one table per
combination of the other axes' levels), so a difference is never confounded
with another axis.  Replicates of a level are its seeds, and only runs that
differ in the seed alone (``frame.config_axes``).  A difference (``compare``)
uses per-prompt scores when every run on both sides reproduces its logged
metric (``per_prompt``): the seed-paired t with matched seeds, the crossed
bootstrap with other seeds, the paired bootstrap over prompts with one seed
(conditional on the checkpoints); otherwise Welch's t-test over seeds.  Holm
runs over the primary family (``Policy``: primary metrics x levels of a
table), Benjamini-Hochberg over the rest.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.eval.suites import SUITES
from harness.report import planning, stats
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
    comparisons: pd.DataFrame  # level, metric, diff, ci_low, ci_high, test, n, p, p_holm, p_bh, family, ...
    notes: list[str] = field(default_factory=list)
    variance: pd.DataFrame | None = None  # VARIANCE_COLUMNS: a level's prompt / seed / residual components
    plan: pd.DataFrame | None = None  # PLAN_COLUMNS: power and planning of the primary comparisons

    @property
    def title(self) -> str:
        fixed = ", ".join(f"{k}={v}" for k, v in self.fixed.items())
        return f"{self.experiment}: {self.axis}" + (f" ({fixed})" if fixed else "")


@dataclass(frozen=True)
class Policy:
    """What a table's inference is about: the primary metrics (the Holm family, with the levels) and TOST margins.

    ``primary`` None means each suite's headline metric (``Suite.headline``): ``eval/<suite>/<headline>``.
    """

    primary: tuple[str, ...] | None = None
    margins: dict[str, float] = field(default_factory=dict)
    target_effect: float | None = None  # ``--plan EFFECT``: the effect the planning table sizes for

    def is_primary(self, metric: str) -> bool:
        if self.primary is not None:
            return metric in self.primary
        parts = metric.split("/")
        suite = SUITES.get(parts[1]) if len(parts) == 3 and parts[0] == "eval" else None
        return suite is not None and suite.headline == parts[2]


@dataclass
class Group:
    """One level of a table: its runs (report rows) and their per-prompt scores by metric."""

    level: str
    rows: pd.DataFrame
    prompts: list[dict[str, dict[str, float] | None]]  # per run: metric -> {id: value} or None
    sampling: list[dict[str, float | None]] = field(default_factory=list)  # per run: metric -> sampling variance


def axis_tables(rows: pd.DataFrame, axes: dict[str, list[str]], metrics: list[str], prompt_scores: dict,
                references: dict[str, str], b: int = stats.DEFAULT_B, policy: Policy | None = None) -> list[AxisTable]:
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
                                      references.get(name), b, policy))
    return tables


def model_table(experiment: str, rows: pd.DataFrame, metrics: list[str], prompt_scores: dict,
                reference: str | None, b: int = stats.DEFAULT_B, axis: str = MODEL_AXIS,
                fixed: dict | None = None, policy: Policy | None = None) -> AxisTable | None:
    """One row per model (judge-only runs, or every evaluated row of a sweep), compared to ``reference``.

    A model judged by several ``harness judge`` commands (one suite each) has several runs under one
    label: they are one level, each metric taken from the runs that logged it."""
    groups = [_group(label, rows[rows["label"] == label], metrics, prompt_scores)
              for label in dict.fromkeys(rows["label"])]
    if len(groups) < 2:
        return None
    return build_table(experiment, axis, fixed or {}, groups, metrics, reference, b, policy)


def _group(level: str, rows: pd.DataFrame, metrics: list[str], prompt_scores: dict) -> Group:
    prompts = [{m: prompt_scores.get((rid, m)) for m in metrics} for rid in rows["run_id"]]
    sampling = [{m: prompt_scores.get((rid, m, "sampling")) for m in metrics} for rid in rows["run_id"]]
    return Group(level, rows, prompts, sampling)


def build_table(experiment: str, axis: str, fixed: dict, groups: list[Group], metrics: list[str],
                reference: str | None, b: int, policy: Policy | None = None) -> AxisTable:
    """Cells (level x metric) and comparisons to ``reference``.

    The Holm family is the primary metrics (``policy.primary``) x levels of this
    table; every other comparison is secondary and gets Benjamini-Hochberg over
    the table's secondary comparisons (``p_bh``), never a Holm value.
    ``policy.margins`` (metric -> margin) add a TOST p-value (``p_tost``).
    """
    policy = policy or Policy()
    levels = [g.level for g in groups]
    reference = levels[0] if reference is None else reference
    ref = next(g for g in groups if g.level == reference)
    cells, comps, plans, variance = [], [], [], []
    for g in groups:
        for m in metrics:
            variance += _variance(g, m)
            values = _values(g, m)
            s = stats.summarize(values)
            low, high, note = s.ci_low, s.ci_high, ""
            if is_rate(m) and s.n >= 2 and (low < 0 or high > 1):
                low, high, note = max(low, 0.0), min(high, 1.0), "t-interval clipped to [0, 1]"
            cells.append({"level": g.level, "metric": m, "n": s.n, "mean": s.mean, "std": s.std,
                          "ci_low": low, "ci_high": high, "ci_note": note})
            if g is not ref and s.n and len(_values(ref, m)):
                comps.append(_comparison_row(g, ref, m, s.mean, b, policy, plans))
    columns = ["level", "metric", "diff", "ci_low", "ci_high", "test", "n", "p", "se", "df", "family", "note",
               "margin", "p_tost"]
    comparisons = pd.DataFrame(comps, columns=columns)
    comparisons["p_holm"] = math.nan
    comparisons["p_bh"] = math.nan
    for family, adjust, col in (("primary", stats.holm, "p_holm"), ("secondary", stats.benjamini_hochberg, "p_bh")):
        rows = comparisons["family"] == family
        if rows.any():
            comparisons.loc[rows, col] = adjust(comparisons.loc[rows, "p"].tolist())
    cells = pd.DataFrame(cells, columns=["level", "metric", "n", "mean", "std", "ci_low", "ci_high", "ci_note"])
    cells = cells[cells["n"] > 0].reset_index(drop=True)
    return AxisTable(experiment, axis, fixed, reference, levels, cells, comparisons,
                     variance=pd.DataFrame(variance, columns=VARIANCE_COLUMNS),
                     plan=pd.DataFrame(plans, columns=PLAN_COLUMNS))


VARIANCE_COLUMNS = ["level", "metric", "seeds", "prompts", "prompt_var", "seed_var", "residual_var", "sampling_var"]
PLAN_COLUMNS = ["level", "metric", "seeds", "prompts", "mde", "target_effect", "prompts_needed", "seeds_needed"]


def _variance(g: Group, metric: str) -> list[dict]:
    """The level's variance components of ``metric`` on the prompts all its runs have (none without scores)."""
    runs = run_prompt_scores(g, metric)
    if runs is None:
        return []
    shared = sorted(set.intersection(*(set(v) for v in runs)))
    if len(shared) < 2:
        return []
    c = planning.components([[v[k] for k in shared] for v in runs])
    sampling = [run.get(metric) for run in g.sampling]
    known = sampling and all(v is not None for v in sampling)
    return [{"level": g.level, "metric": metric, "seeds": c.seeds, "prompts": c.prompts, "prompt_var": c.prompt,
             "seed_var": c.seed, "residual_var": c.residual,
             "sampling_var": sum(sampling) / len(sampling) if known else math.nan}]


def _plan(level: str, metric: str, scored, target: float | None) -> dict:
    """MDE of this comparison's design (S = the fewer seeds, P shared prompts) and what ``target`` needs
    (default: half the MDE)."""
    a, r = scored
    d = planning.design(a, r)
    seeds, prompts = min(len(a), len(r)), a.shape[1]
    mde = d.mde(seeds, prompts)
    effect = target if target is not None else mde / 2
    return {"level": level, "metric": metric, "seeds": seeds, "prompts": prompts, "mde": mde,
            "target_effect": effect, "prompts_needed": d.prompts_needed(effect, seeds) if effect > 0 else math.nan,
            "seeds_needed": d.seeds_needed(effect, prompts) if effect > 0 else math.nan}


def _comparison_row(g: Group, ref: Group, m: str, level_mean: float, b: int, policy: Policy, plans: list) -> dict:
    """One comparisons row of ``g`` against ``ref`` (and its planning row, for a primary metric, into ``plans``)."""
    c, note, scored = compare_tables(g, ref, m, b)
    if scored is not None and policy.is_primary(m):
        plans.append(_plan(g.level, m, scored, policy.target_effect))
    level_diff = level_mean - stats.summarize(_values(ref, m)).mean
    if not math.isnan(c.diff) and abs(c.diff - level_diff) > 1e-9 * max(1.0, abs(c.diff)):
        shared = (f"over the {c.n} prompts both levels share, so it differs from the level means' "
                  f"difference ({level_diff:.3g})")
        note = f"{shared}; {note}" if note else shared
    margin = policy.margins.get(m)
    return {"level": g.level, "metric": m, "diff": c.diff, "ci_low": c.ci_low, "ci_high": c.ci_high,
            "test": c.test, "n": c.n, "p": c.p, "se": c.se, "df": c.df,
            "family": "primary" if policy.is_primary(m) else "secondary", "note": note,
            "margin": margin if margin is not None else math.nan,
            "p_tost": stats.tost(c, margin) if margin is not None else math.nan}


RATE_SUFFIXES = ("_rate", "accuracy", "position_consistency")


def is_rate(metric: str) -> bool:
    """Whether a metric is a fraction in [0, 1] (DESIGN: rates are fractions everywhere)."""
    leaf = metric.rsplit("/", 1)[-1]
    return leaf.startswith("pass_at_") or leaf.endswith(RATE_SUFFIXES)


def _values(g: Group, metric: str) -> list[float]:
    col = f"metrics.{metric}"
    if col not in g.rows.columns:
        return []
    return [float(v) for v in g.rows[col] if v is not None and not math.isnan(v)]


def compare(g: Group, ref: Group, metric: str, b: int) -> tuple[stats.Comparison, str]:
    """``compare_tables`` without the score tables."""
    c, note, _ = compare_tables(g, ref, metric, b)
    return c, note


def compare_tables(g: Group, ref: Group, metric: str, b: int):
    """The difference ``g - ref`` of ``metric`` with the interval its replicates allow, and a note.

    With per-prompt scores on both sides (every run reproduces its logged value):
    2+ seeds per level and the same seeds on both sides -> the seed-paired t on
    per-seed differences; 2+ seeds per level otherwise -> the crossed bootstrap
    over seeds and prompts; one seed on a side -> the paired bootstrap over
    prompts, conditional on the checkpoint(s).  Without per-prompt scores,
    Welch over seeds.  All on the prompts every run of both levels has.
    Returns (comparison, note, (treatment, reference) score tables or None).
    """
    a, r = run_prompt_scores(g, metric), run_prompt_scores(ref, metric)
    if a is None or r is None:
        return stats.welch(_values(g, metric), _values(ref, metric)), "", None
    shared = sorted(set.intersection(*(set(v) for v in a + r)))
    if not shared:
        return stats.Comparison(math.nan, math.nan, math.nan, math.nan, "none (no shared prompts)", 0), "", None
    A = np.array([[v[k] for k in shared] for v in a])
    R = np.array([[v[k] for k in shared] for v in r])
    if len(A) >= 2 and len(R) >= 2:
        sa, sr = _seeds(g), _seeds(ref)
        if sa is not None and sa == sr:
            A, R = A[np.argsort(sa)], R[np.argsort(sr)]
            return stats.seed_paired_t(A, R), "", (A, R)
        return stats.crossed_bootstrap(A, R, b=b), "", (A, R)
    c = stats.paired_bootstrap(A.mean(axis=0), R.mean(axis=0), b=b)
    note = "conditional on the trained checkpoint(s): one seed, so seed-to-seed variance is not in the interval"
    return c, note, (A, R)


def _seeds(g: Group) -> list[str] | None:
    """The level's seeds (``params.train.seed``) when every run has one and no seed repeats, else None."""
    col = "params.train.seed"
    if col not in g.rows.columns or g.rows[col].isna().any():
        return None
    seeds = [str(s) for s in g.rows[col]]
    return seeds if len(set(seeds)) == len(seeds) else None


def run_prompt_scores(g: Group, metric: str) -> list[dict[str, float]] | None:
    """Per-prompt scores of each run of a level, or None unless every run's scores reproduce its logged value."""
    per_run = []
    col = f"metrics.{metric}"
    logged = g.rows[col].tolist() if col in g.rows.columns else [None] * len(g.rows)
    for value, prompts in zip(logged, g.prompts):
        values = prompts.get(metric)
        if values is None or not reproduces(values, value):
            return None
        per_run.append(values)
    return per_run or None
