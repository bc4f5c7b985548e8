"""The HTML report in a real headless Chromium: every image decodes and every table renders.

Chromium comes from the OS packages (Debian: ``apt-get install chromium``; ``make test-browser``
installs it when missing).  Without it these tests skip and say so.  No Python browser driver is
needed: a copy of the page gets a small script that, on ``load``, writes what the browser rendered
(each image's ``naturalWidth``/``naturalHeight``, each table's rendered rows and cells, with their
on-screen size) into a ``<pre>`` element, and ``chromium --headless --dump-dom`` prints the DOM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.report import write_report
from tests.report.test_report import build_store

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHECK = """<script>
window.addEventListener("load", () => {
  const box = (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  const out = {
    images: [...document.images].map((img) => ({id: img.closest("figure") ? img.closest("figure").id : "",
      complete: img.complete, width: img.naturalWidth, height: img.naturalHeight, box: box(img)})),
    tables: [...document.querySelectorAll("table")].map((t) => ({rows: t.tBodies.length ? t.tBodies[0].rows.length : 0,
      header: t.tHead ? t.tHead.rows[0].cells.length : 0, box: box(t)})),
  };
  const pre = document.createElement("pre");
  pre.id = "browser-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def chromium() -> str | None:
    """The Chromium binary: $HARNESS_CHROMIUM, else the first of BROWSERS on PATH."""
    if os.environ.get("HARNESS_CHROMIUM"):
        return os.environ["HARNESS_CHROMIUM"]
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


needs_chromium = pytest.mark.skipif(
    chromium() is None, reason=f"no Chromium found (looked for $HARNESS_CHROMIUM and {', '.join(BROWSERS)} on "
                               "PATH); `make test-browser` installs it with apt-get and runs these tests")


def rendered(page: Path, tmp: Path) -> dict:
    """What headless Chromium rendered of ``page``: its images and tables (see CHECK)."""
    probe = tmp / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    args = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=10000", "--window-size=1280,2000",
            "--dump-dom", probe.as_uri()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', done.stdout, flags=re.DOTALL)
    assert found, f"no result from {args[0]} (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                      .replace("&gt;", ">"))


@needs_chromium
def test_every_image_loads_and_every_table_renders(tmp_path):
    store, _ = build_store(tmp_path)
    out = tmp_path / "out"
    markdown = write_report(store, ["synth", "judge"], out, "md+html", log_artifacts=False)
    seen = rendered(out / "report.html", tmp_path)
    figures = sorted(p.stem for p in (out / "plots").glob("*.png"))
    assert len(figures) >= 5
    assert sorted(img["id"] for img in seen["images"]) == figures
    for img in seen["images"]:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
        assert img["box"][0] > 0 and img["box"][1] > 0, img  # laid out on the page, not only decoded
    n_tables = len(re.findall(r"^\|[- |]+\|$", markdown, flags=re.MULTILINE))
    assert len(seen["tables"]) == n_tables >= 8
    for table in seen["tables"]:
        assert table["rows"] > 0 and table["header"] > 0 and table["box"][1] > 0, table


@needs_chromium
def test_a_broken_image_is_caught(tmp_path):
    """The check can fail: an image whose data does not decode has naturalWidth 0."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><figure id="bad"><img src="data:image/png;base64,bm90IGEgcG5n">'
                    "</figure><table><thead><tr><th>a</th></tr></thead><tbody></tbody></table></body></html>")
    seen = rendered(page, tmp_path)
    assert seen["images"][0]["width"] == 0 and seen["tables"][0]["rows"] == 0
