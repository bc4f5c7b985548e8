"""The report's figures (matplotlib, Agg canvas), each returned as a ``Figure`` record with PNG bytes.

Every function returns None when the runs hold nothing to draw, so a report
shows only figures with data behind them.

Drawing is most of a report's CPU time, so figures are built on
``matplotlib.figure.Figure`` with an Agg canvas (no pyplot) and laid out with
fixed margins in inches (``_new``) instead of ``tight_layout``, which would lay
out every tick label once more before the real draw.  In a grid of panels only
the bottom panel of each column carries the level names.

What the figures promise a reader: levels of an ablation are categories, so they
are points with interval bars and no line between them; quantities on different
scales never share an axis (one panel per training method: SFT's loss starts near
10, DPO's near 0.69); per-run distributions get a panel each, so none hides
another; and an axis that shows an estimate names its estimator (``train/kl`` is
the ``harness.kl_estimator`` tag's estimate, which for k1 is a log-ratio mean and
can be negative).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator, NullLocator

CURVES = {"train/loss": "loss", "train/rewards/margin": "reward margin", "train/kl": "KL"}
MAX_PANELS = 12
DPI = 80
# Fixed margins (inches) of a one-axes figure: room for tick labels plus an axis label, and a title or offset.
MARGINS = {"left": 0.95, "bottom": 0.6, "right": 0.2, "top": 0.3}


@dataclass(frozen=True)
class Figure:
    name: str  # file stem, e.g. "curves-train_loss"
    caption: str
    png: bytes
    # The matplotlib figure it was drawn from: its axes, artists and labels are what tests inspect.
    figure: MplFigure | None = field(default=None, compare=False, repr=False)


def _new(width: float, height: float, left: float = MARGINS["left"], bottom: float = MARGINS["bottom"],
         right: float = MARGINS["right"], top: float = MARGINS["top"], **spacing) -> MplFigure:
    """A figure of ``width`` x ``height`` inches whose subplots leave the given margins (inches)."""
    fig = MplFigure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        **spacing)
    return fig


def _png(fig: MplFigure, name: str, caption: str) -> Figure:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return Figure(name, caption, buf.getvalue(), fig)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def estimator_label(key: str, estimator: str | None) -> str:
    """An axis label for ``key`` that names its estimator (the ``harness.kl_estimator`` tag), e.g.
    ``train/kl: k1 on the dataset responses`` plus, for k1, that the log-ratio mean can be negative."""
    if not estimator:
        return f"{key} (estimator not recorded)"
    short = estimator.split(":")[0].strip()
    if short.startswith("k1"):
        return f"{key}: {short}\n(log-ratio mean, can be < 0)"
    return f"{key}: {short}"


def training_curves(histories: dict[str, dict[str, list[tuple[int, float]]]], key: str,
                    families: dict[str, str] | None = None, ylabels: dict[str, str] | None = None) -> Figure | None:
    """Metric ``key`` against step, one line per training run (``label -> {metric: [(step, value)]}``).

    ``families`` maps a run label to its loss family (the stage's method): each family gets its own
    panel, so losses on different scales never share an axis.  ``ylabels``: family -> y label (default
    ``key``), e.g. the KL estimator's name.
    """
    series = {label: h[key] for label, h in histories.items() if h.get(key)}
    if not series:
        return None
    family_of = {label: (families or {}).get(label) or "runs" for label in series}
    panels = sorted(set(family_of.values()))[:MAX_PANELS]
    ax_h, gap = 2.6, 0.9  # inches: panel height, gap between panels
    height = 0.5 + len(panels) * ax_h + (len(panels) - 1) * gap + 0.6
    fig = _new(6.4, height, left=1.2, right=0.2, top=0.5, bottom=0.6, hspace=gap / ax_h)
    for i, family in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        for label in (lb for lb, f in family_of.items() if f == family):
            points = series[label]
            ax.plot([s for s, _ in points], [v for _, v in points], marker=".", label=label)
        ax.set_title(f"{family}" if family != "runs" else key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel((ylabels or {}).get(family, key), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    what = CURVES.get(key, key)
    return _png(fig, f"curves-{_slug(key)}",
                f"Training curves: {what} ({key}) per run, by step; one panel per training method, "
                "so losses of different families are not on one axis.")


def metric_by_level(table, metrics: list[str]) -> Figure | None:
    """A panel per metric: mean by level with the t-interval over seeds as error bars (none for 1 seed).

    Every panel puts the table's levels at the same x positions, so a column of
    panels shares one set of level names, drawn under its bottom panel.
    """
    metrics = [m for m in metrics if m in set(table.cells["metric"])][:MAX_PANELS]
    if not metrics:
        return None
    levels = [str(v) for v in table.levels]
    cols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    longest = max(len(v) for v in levels)
    rotate = longest > 8 or len(levels) * max(longest, 3) > 30  # names would touch side by side
    label_room = 0.2 + (0.065 * longest if rotate else 0.15)  # 7-point names: ~0.065 in per character
    ax_w, ax_h, gap_w, gap_h = 3.0, 2.1, 0.8, 0.5
    width = 0.7 + cols * ax_w + (cols - 1) * gap_w + 0.2
    height = 0.6 + nrows * ax_h + (nrows - 1) * gap_h + label_room
    fig = _new(width, height, left=0.7, bottom=label_room, right=0.2, top=0.6,
               wspace=gap_w / ax_w, hspace=gap_h / ax_h)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(nrows, cols, i + 1)
        c = table.cells[table.cells["metric"] == metric]
        x = [levels.index(str(v)) for v in c["level"]]
        low = (c["mean"] - c["ci_low"]).fillna(0).to_numpy()
        high = (c["ci_high"] - c["mean"]).fillna(0).to_numpy()
        # Levels are categories: points with interval bars, no line implying an order between them.
        ax.errorbar(x, c["mean"], yerr=[low, high], fmt="o", linestyle="none", capsize=4)
        ax.set_xlim(-0.5, len(levels) - 0.5)
        bottom_of_column = i + cols >= len(metrics)
        ax.set_xticks(range(len(levels)), levels if bottom_of_column else [], rotation=90 if rotate else 0,
                      fontsize=7)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.tick_params(axis="y", labelsize=7)
        # A fixed title height and label place: matplotlib would otherwise measure every tick label of the
        # panel's row to place them (nothing is drawn above the panel, and it has no axis labels).
        ax.set_title(metric_title(metric), fontsize=8, y=1.0)
        ax.xaxis.set_label_coords(0.5, 0.0)
        ax.yaxis.set_label_coords(0.0, 0.5)
    fig.suptitle(table.title, fontsize=9)
    return _png(fig, f"levels-{_slug(table.title)}",
                f"{table.title}: each metric by level; error bars are 95% t-intervals over seeds.")


def metric_title(metric: str) -> str:
    """A metric's name, with its estimator where the name alone misleads (sampled KL is a k1 log-ratio)."""
    if metric.endswith("/kl"):
        return f"{metric} (k1 log-ratio, can be < 0)"
    return metric


def scatter(points: dict[str, tuple[float, float]], xlabel: str, ylabel: str, name: str, caption: str,
            diagonal: bool = False) -> Figure | None:
    """A labelled point per run; ``diagonal`` adds y = x."""
    points = {k: v for k, v in points.items() if not any(math.isnan(u) for u in v)}
    if not points:
        return None
    fig = _new(5, 4)
    ax = fig.add_subplot()
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
    fig = _new(5, 3.5)
    ax = fig.add_subplot()
    for label, by_k in curves.items():
        ks = sorted(by_k)
        ax.plot(ks, [by_k[k] for k in ks], marker="o", label=label)
    ax.set_xscale("log", base=2)
    every_k = sorted({k for by_k in curves.values() for k in by_k})
    ax.set_xticks(every_k, [str(k) for k in every_k])  # the k values themselves, not 2^n mathtext
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("k")
    ax.set_ylabel(f"eval/{suite}/pass_at_k")
    ax.legend(fontsize=7)
    return _png(fig, f"pass_at_k-{_slug(suite)}", f"{suite}: pass@k over k (unbiased estimator) per run.")


def length_distributions(lengths: dict[str, list[float]], suite: str) -> Figure | None:
    """Small multiples: a histogram of response length (tokens) per run, on shared bins and axes,
    so no run's distribution hides another's."""
    lengths = {k: v for k, v in lengths.items() if v}
    if not lengths:
        return None
    labels = list(lengths)[:MAX_PANELS]
    everything = [x for label in labels for x in lengths[label]]
    lo, hi = min(everything), max(everything) + 1
    bins = min(40, max(5, int(hi - lo)))
    cols = min(3, len(labels))
    nrows = math.ceil(len(labels) / cols)
    ax_w, ax_h, gap_w, gap_h = 2.6, 1.6, 0.5, 0.6
    width = 0.8 + cols * ax_w + (cols - 1) * gap_w + 0.2
    height = 0.5 + nrows * ax_h + (nrows - 1) * gap_h + 0.6
    fig = _new(width, height, left=0.8, bottom=0.6, right=0.2, top=0.5, wspace=gap_w / ax_w, hspace=gap_h / ax_h)
    first = None
    for i, label in enumerate(labels):
        ax = fig.add_subplot(nrows, cols, i + 1, sharex=first, sharey=first)
        first = first or ax
        ax.hist(lengths[label], bins=bins, range=(lo, hi), histtype="stepfilled", alpha=0.8)
        ax.set_title(label, fontsize=7)
        ax.tick_params(labelsize=6)
        if i + cols >= len(labels):
            ax.set_xlabel("response length (tokens)", fontsize=7)
        if i % cols == 0:
            ax.set_ylabel("samples", fontsize=7)
    fig.suptitle(f"{suite}: response lengths", fontsize=9)
    return _png(fig, f"lengths-{_slug(suite)}",
                f"{suite}: distribution of response lengths (tokens per sample, from outputs/{suite}.jsonl), "
                "one panel per run on shared bins and axes.")
