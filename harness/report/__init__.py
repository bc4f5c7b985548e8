"""``harness report``: MLflow runs -> per-axis tables with CIs, tests and plots (md, html, csv).

Modules, one concept each: ``frame`` (reading runs and artifacts), ``per_prompt``
(per-prompt scores), ``stats`` (estimators), ``compare`` (per-axis tables),
``collect`` (gathering it all), ``plots``, ``sections`` (report content) and
``render`` (markdown / HTML).
"""

from __future__ import annotations

from pathlib import Path

from harness.console import say
from harness.report.collect import collect, parse_references
from harness.report.frame import client_for, parent_runs
from harness.report.render import figures, to_html, to_markdown
from harness.report.sections import blocks, runs_table, tidy_csv
from harness.report.stats import DEFAULT_B
from harness.run.tracking import Store, resolve_store

FORMATS = {"md": ("md",), "html": ("html",), "csv": ("csv",), "md+html": ("md", "html"), "all": ("md", "html", "csv")}
DEFAULT_FORMAT = "md+html"
ARTIFACT_DIR = "report"


def write_report(store: Store, experiments: list[str], out_dir: Path, fmt: str = "md",
                 references: list[str] | None = None, b: int = DEFAULT_B, log_artifacts: bool = True,
                 plan: float | None = None) -> str:
    """Write the report's files into ``out_dir`` and return its markdown.

    Files: ``report.md`` + ``plots/*.png`` (md), ``report.html`` (html, images
    embedded), ``report.csv`` (every level and comparison) + ``runs.csv`` (csv).
    With ``log_artifacts`` they are also logged under ``report/`` on each
    experiment's sweep parent run(s).  ``plan`` (``--plan``): add the power and
    planning tables, sized for that effect (0: half of each comparison's MDE).
    """
    data = collect(store, experiments, parse_references(references or []), b, plan or None)
    content = blocks(data, b, plan is not None)
    markdown = to_markdown(content)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    kinds = FORMATS[fmt]
    if "md" in kinds:
        (out_dir / "plots").mkdir(exist_ok=True)
        for fig in figures(content):
            path = out_dir / "plots" / f"{fig.name}.png"
            path.write_bytes(fig.png)
            written.append(path)
        written.append(out_dir / "report.md")
        written[-1].write_text(markdown)
    if "html" in kinds:
        written.append(out_dir / "report.html")
        written[-1].write_text(to_html(content, "Report: " + ", ".join(experiments)))
    if "csv" in kinds:
        written.append(out_dir / "report.csv")
        tidy_csv(data).to_csv(written[-1], index=False)
        written.append(out_dir / "runs.csv")
        runs_table(data, numeric=True, columns="all").to_csv(written[-1], index=False)
    if log_artifacts:
        _log_to_parents(store, data, out_dir, written)
    return markdown


def _log_to_parents(store: Store, data, out_dir: Path, files: list[Path]) -> None:
    """Log the files under ``report/`` (keeping ``plots/``) on every sweep parent run of the experiments."""
    client = client_for(store)
    for run_id in parent_runs(data.runs)["run_id"]:
        for path in files:
            sub = path.parent.relative_to(out_dir)
            client.log_artifact(run_id, str(path), f"{ARTIFACT_DIR}/{sub}" if str(sub) != "." else ARTIFACT_DIR)


def command(args) -> int:
    """``harness report``: write the report files and print the markdown (or the chosen format)."""
    store = resolve_store(args.tracking_uri, None, None, args.results_dir)
    out = Path(args.out) if args.out else Path(args.results_dir) / "reports" / "-".join(args.experiments)
    print(write_report(store, args.experiments, out, args.format, args.reference,
                       plan=getattr(args, "plan", None)), end="")
    names = {"md": "report.md (+ plots/)", "html": "report.html", "csv": "report.csv, runs.csv"}
    say(f"report written to {out.resolve()}: {', '.join(names[k] for k in FORMATS[args.format])}")
    return 0
