"""What the user reads: lines on stderr (written so that an active progress bar is not torn), plain tables."""

from __future__ import annotations

import os
import sys
import time
import warnings

from tqdm.auto import tqdm


def table(rows: list[dict], title: str | None = None) -> str:
    """A plain aligned text table of ``rows`` (dicts sharing keys); floats with 4 significant digits."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ([title] if title else []) + ["  ".join(k.ljust(w) for k, w in zip(keys, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def say(message: str) -> None:
    """One line on stderr (stdout stays for results, e.g. ``--format json``)."""
    tqdm.write(message, file=sys.stderr)


class StepLines:
    """Progress as plain lines where no bar is drawn (stderr is a file or a pipe, e.g. a cluster log).

    A line every ``every`` steps, or when ``seconds`` have passed since the last one, and at the end:
    ``train dpo: step 40/200 (20%) loss 0.6532, 3.21 it/s, ETA 50 s``.
    """

    def __init__(self, desc: str, total: int, every: int, seconds: float = 30.0, clock=None):
        self.desc, self.total, self.every, self.seconds = desc, total, max(1, every), seconds
        self.clock = clock or time.monotonic
        self.start = self.last = self.clock()

    def line(self, step: int, loss: float) -> str | None:
        """The line to print after ``step`` (None: not yet)."""
        now = self.clock()
        if not (step % self.every == 0 or step == self.total or now - self.last >= self.seconds):
            return None
        self.last = now
        rate = step / max(now - self.start, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        return (f"{self.desc}: step {step}/{self.total} ({step / self.total:.0%}) loss {loss:.4f}, "
                f"{rate:.2f} it/s, ETA {eta:.0f} s")

    def update(self, step: int, loss: float) -> None:
        text = self.line(step, loss)
        if text is not None:
            say(text)


def quiet_libraries() -> None:
    """harness draws its own progress bars; transformers' per-load bars would drown them.

    Not yet imported (a command may never need it), transformers takes both settings from the environment
    when it is (a user's own TRANSFORMERS_VERBOSITY or HF_HUB_DISABLE_PROGRESS_BARS wins); already imported,
    it is told directly."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    else:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Deprecation notices between transformers and peft are not the user's to act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
