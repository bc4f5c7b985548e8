"""Rendering a report: markdown (stdout and file), one self-contained HTML file, tidy CSV.

A report is a list of blocks (heading, paragraph, table, figure); markdown and
HTML walk the same list, so both always hold the same tables and figures.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass

import pandas as pd

from harness.report.plots import Figure


@dataclass(frozen=True)
class Block:
    kind: str  # "h1" | "h2" | "h3" | "p" | "table" | "figure"
    content: object  # str, DataFrame or Figure


def fmt_number(value, digits: int = 3) -> str:
    """Rates and scores to ``digits`` decimals; whole numbers >= 1 and values >= 100 to 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if abs(value) >= 100 or (abs(value) >= 1 and float(value).is_integer()):
        return f"{value:.4g}"
    return f"{value:.{digits}f}"


def fmt_p(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def fmt_interval(mean, low, high) -> str:
    """``mean [low, high]``, or just the mean when there is no interval."""
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return fmt_number(mean)
    return f"{fmt_number(mean)} [{fmt_number(low)}, {fmt_number(high)}]"


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table, columns padded to equal width."""
    cells = [[str(c) for c in df.columns]] + [["" if v is None else str(v).replace("|", "\\|") for v in row]
                                              for row in df.values]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]

    def line(r):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |"

    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


def to_markdown(blocks: list[Block], image_dir: str = "plots") -> str:
    """Markdown; figures link to ``image_dir/NAME.png`` next to the file."""
    parts = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            parts.append("#" * int(b.kind[1]) + " " + b.content)
        elif b.kind == "p":
            parts.append(b.content)
        elif b.kind == "table":
            parts.append(markdown_table(b.content))
        elif b.kind == "figure":
            parts.append(f"![{b.content.caption}]({image_dir}/{b.content.name}.png)\n\n*{b.content.caption}*")
    return "\n\n".join(parts) + "\n"


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
         "figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:13px;color:#444}")


def to_html(blocks: list[Block], title: str) -> str:
    """One self-contained HTML page: tables inline, images as base64 ``data:`` URIs."""
    body = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            body.append(f"<{b.kind}>{html.escape(b.content)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{html.escape(b.content)}</p>")
        elif b.kind == "table":
            body.append(b.content.to_html(index=False, escape=True, border=0, na_rep=""))
        elif b.kind == "figure":
            data = base64.b64encode(b.content.png).decode("ascii")
            body.append(f'<figure id="{html.escape(b.content.name)}"><img alt="{html.escape(b.content.caption)}" '
                        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(b.content.caption)}'
                        f"</figcaption></figure>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def figures(blocks: list[Block]) -> list[Figure]:
    return [b.content for b in blocks if b.kind == "figure"]
