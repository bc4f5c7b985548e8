"""The report's figures (matplotlib, Agg backend), each returned as a ``Figure`` record with PNG bytes.

Every function returns None when the runs hold nothing to draw, so a report
shows only figures with data behind them.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVES = {"train/loss": "loss", "train/rewards/margin": "reward margin", "train/kl": "KL"}
MAX_PANELS = 12


@dataclass(frozen=True)
class Figure:
    name: str  # file stem, e.g. "curves-train_loss"
    caption: str
    png: bytes


def _png(fig, name: str, caption: str) -> Figure:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return Figure(name, caption, buf.getvalue())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def training_curves(histories: dict[str, dict[str, list[tuple[int, float]]]], key: str) -> Figure | None:
    """One line per training run (``label -> {metric: [(step, value)]}``) of metric ``key`` against step."""
    series = {label: h[key] for label, h in histories.items() if h.get(key)}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, points in series.items():
        ax.plot([s for s, _ in points], [v for _, v in points], marker=".", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.legend(fontsize=7)
    return _png(fig, f"curves-{_slug(key)}", f"Training curves: {CURVES.get(key, key)} ({key}) per run, by step.")


def metric_by_level(table, metrics: list[str]) -> Figure | None:
    """A panel per metric: mean by level with the t-interval over seeds as error bars (none for 1 seed)."""
    metrics = [m for m in metrics if m in set(table.cells["metric"])][:MAX_PANELS]
    if not metrics:
        return None
    cols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        c = table.cells[table.cells["metric"] == metric]
        x = range(len(c))
        low = (c["mean"] - c["ci_low"]).fillna(0).to_numpy()
        high = (c["ci_high"] - c["mean"]).fillna(0).to_numpy()
        ax.errorbar(x, c["mean"], yerr=[low, high], fmt="o-", capsize=4)
        ax.set_xticks(list(x), [str(v) for v in c["level"]], rotation=30, fontsize=7)
        ax.set_title(metric, fontsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(table.title, fontsize=9)
    return _png(fig, f"levels-{_slug(table.title)}",
                f"{table.title}: each metric by level; error bars are 95% t-intervals over seeds.")


def scatter(points: dict[str, tuple[float, float]], xlabel: str, ylabel: str, name: str, caption: str,
            diagonal: bool = False) -> Figure | None:
    """A labelled point per run; ``diagonal`` adds y = x."""
    points = {k: v for k, v in points.items() if not any(math.isnan(u) for u in v)}
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, (x, y) in points.items():
        ax.scatter([x], [y])
        ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if diagonal:
        lo = min(min(v) for v in points.values())
        hi = max(max(v) for v in points.values())
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _png(fig, name, caption)


def pass_at_k_curves(curves: dict[str, dict[int, float]], suite: str) -> Figure | None:
    """pass@k against k, one line per run with at least two k values."""
    curves = {k: v for k, v in curves.items() if len(v) >= 2}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, by_k in curves.items():
        ks = sorted(by_k)
        ax.plot(ks, [by_k[k] for k in ks], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel(f"eval/{suite}/pass_at_k")
    ax.legend(fontsize=7)
    return _png(fig, f"pass_at_k-{_slug(suite)}", f"{suite}: pass@k over k (unbiased estimator) per run.")


def length_distributions(lengths: dict[str, list[float]], suite: str) -> Figure | None:
    """Histograms (steps, shared bins) of response length in tokens, one per run."""
    lengths = {k: v for k, v in lengths.items() if v}
    if not lengths:
        return None
    everything = [x for v in lengths.values() for x in v]
    bins = min(40, max(5, int(max(everything) - min(everything)) + 1))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, values in lengths.items():
        ax.hist(values, bins=bins, range=(min(everything), max(everything) + 1), histtype="step", label=label)
    ax.set_xlabel("response length (tokens)")
    ax.set_ylabel("samples")
    ax.legend(fontsize=7)
    return _png(fig, f"lengths-{_slug(suite)}",
                f"{suite}: distribution of response lengths (tokens per sample, from outputs/{suite}.jsonl).")
