"""Re-score AlpacaEval annotation files: soft win rate, its SE and the LC win rate, in percent.

DESIGN.md "Contract: data formats" (Annotations) and "Contract: outputs and units" (Annotations):

* a row is ``{instruction, output_1, generator_1, output_2, generator_2, preference}``;
  output_1 / generator_1 is the baseline, generator_2 the evaluated model;
* preference 2 = output_2 preferred, 1 = output_1 preferred, 1.5 or 0 = tie; any number in
  [1, 2] is a soft preference (AlpacaEval's weighted annotators).  The row's label for
  generator_2 is preference - 1, with 0 (a tie) read as 0.5;
* a row without a valid preference (missing, null, NaN, not a number, outside {0} ∪ [1, 2]) is
  an ``error``: counted in ``n`` and ``errors``, left out of every rate;
* win_rate = 100 · mean(label) over valid rows (AlpacaEval's soft win rate);
  standard_error = 100 · s / sqrt(m), s the sample std (ddof = 1) of the m valid labels;
* lc_win_rate / lc_standard_error: the LC GLM of judges.stats.lc, fitted jointly over every generator
  that shares a baseline (generator_1), across all the files given;
* lc_win_rate_v1: AlpacaEval's per-model ``length_controlled_v1`` GLM (judges.stats.lc_v1) with the
  instruction difficulty of a user's file (``difficulty``: instruction index -> d, the index of a row
  being its position among its generator's rows, as AlpacaEval's files list the instructions in
  order), else the γ of the joint fit when several generators share the baseline, else none;
* length_one_sided: 100 · the share of the generator's nonzero length differences that have the
  majority sign; at 95 or more the LC (either kind) extrapolates to Δ = 0, and a warning says so.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import DataError, HarnessError
from judges.stats.lc import fit_lc, lc_win_rates, make_lc_data
from judges.stats.lc_v1 import ONE_SIDED, fit_lc_v1, one_sided_share

TEXT_FIELDS = ("instruction", "output_1", "generator_1", "output_2", "generator_2")


@dataclass(frozen=True)
class Annotation:
    """One validated row.  ``label`` is generator_2's preference in [0, 1], or None (an error)."""

    where: str
    instruction: str
    baseline: str
    generator: str
    baseline_length: float
    length: float
    label: float | None


def preference_label(value: object) -> float | None:
    """AlpacaEval preference -> generator_2's label: 0 -> 0.5 (tie), p in [1, 2] -> p - 1, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if value == 0:
        return 0.5
    if 1.0 <= value <= 2.0:
        return float(value) - 1.0
    return None


def length_function(length_unit: str, tokenizer: object = None) -> Callable[[str], int]:
    """chars: len(text).  tokens: len(tokenizer.encode(text)) for an HF-style tokenizer (special
    tokens left out), or tokenizer(text) for a plain callable that returns a count."""
    if length_unit == "chars":
        return len
    if length_unit != "tokens":
        raise HarnessError(f"--length-unit must be 'chars' or 'tokens', got {length_unit!r}")
    if tokenizer is None:
        raise HarnessError("--length-unit tokens needs a tokenizer (none was given)")
    if hasattr(tokenizer, "encode"):
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False))
    return lambda text: int(tokenizer(text))


def read_annotations(path: Path, length: Callable[[str], int]) -> list[Annotation]:
    """Parse one file (a JSON list, or JSONL with one object per line); malformed rows raise
    DataError naming ``file:line`` (line = list index + 1 for JSON lists) and the field."""
    return [_annotation(where, row, length) for where, row in _raw_rows(path)]


def _text(path: Path) -> str:
    """The file as UTF-8 text (a leading BOM dropped); other bytes are a DataError naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8") from None


def _raw_rows(path: Path) -> list[tuple[str, object]]:
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    text = _text(path)
    if path.suffix.lower() == ".jsonl":
        rows = []
        # lines end at \n only (str.splitlines also cuts at U+2028, which JSON strings may hold)
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                rows.append((f"{path}:{number}", _parse(line, f"{path}:{number}")))
        return rows
    value = _parse(text, str(path))
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON list of annotations, got {type(value).__name__}")
    return [(f"{path}:{i + 1}", row) for i, row in enumerate(value)]


def _parse(text: str, where: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None


def _annotation(where: str, row: object, length: Callable[[str], int]) -> Annotation:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an annotation object, got {type(row).__name__}")
    for field in TEXT_FIELDS:
        value = row.get(field)
        if not isinstance(value, str):
            seen = "missing" if field not in row else f"{type(value).__name__} {value!r}"[:80]
            raise DataError(f"{where}: field '{field}': expected a string, got {seen}")
    return Annotation(where, row["instruction"], row["generator_1"], row["generator_2"],
                      length(row["output_1"]), length(row["output_2"]), preference_label(row.get("preference")))


def score_annotations(annotations: Sequence[Annotation], *, n_bootstrap: int = 200,
                      seed: int = 0, difficulty: dict[int, float] | None = None) -> list[dict]:
    """One row per evaluated generator (first-seen order), rates in percent (module docstring)."""
    baseline_of: dict[str, Annotation] = {}
    for a in annotations:
        first = baseline_of.setdefault(a.generator, a)
        if first.baseline != a.baseline:
            raise DataError(f"{a.where}: generator '{a.generator}' is compared with baseline "
                            f"'{a.baseline}' here but with '{first.baseline}' at {first.where}; "
                            "score one baseline per run")
    lc, joint_gamma = {}, {}
    for baseline in dict.fromkeys(a.baseline for a in annotations):
        valid = [a for a in annotations if a.baseline == baseline and a.label is not None]
        if valid:
            data = make_lc_data([a.generator for a in valid], [a.instruction for a in valid],
                                [a.length - a.baseline_length for a in valid], [a.label for a in valid])
            lc.update(lc_win_rates(data, n_bootstrap=n_bootstrap, seed=seed))
            if len(data.models) > 1 and difficulty is None:
                gamma = fit_lc(data).gamma
                joint_gamma.update({(baseline, name): float(gamma[i]) for i, name in enumerate(data.instructions)})
    rows = []
    for g in baseline_of:
        mine = [a for a in annotations if a.generator == g]
        row = _generator_row(g, mine, lc.get(g))
        row.update(_v1_columns(g, mine, difficulty, joint_gamma))
        rows.append(row)
    return rows


def _v1_columns(generator: str, rows: list[Annotation], difficulty: dict[int, float] | None,
                joint_gamma: dict) -> dict:
    """lc_win_rate_v1 and length_one_sided (percent) of one generator's rows, with the one-sided warning."""
    kept = [(k, a) for k, a in enumerate(rows) if a.label is not None]
    if not kept:
        return {"lc_win_rate_v1": None, "length_one_sided": None}
    if difficulty is not None:
        missing = [k for k, _ in kept if k not in difficulty]
        if missing:
            raise DataError(f"{rows[missing[0]].where}: instruction index {missing[0]} of generator "
                            f"'{generator}' has no row in the instruction-difficulty file "
                            f"({len(missing)} missing)")
        d = [difficulty[k] for k, _ in kept]
    else:
        d = [joint_gamma.get((a.baseline, a.instruction), 0.0) for _, a in kept]
    deltas = [a.length - a.baseline_length for _, a in kept]
    rate, _ = fit_lc_v1(deltas, d, [a.label for _, a in kept])
    share = one_sided_share(deltas)
    if share is not None and share >= ONE_SIDED:
        warnings.warn(f"{generator}: {100 * share:.0f}% of its length differences with the baseline have one "
                      "sign, so its length-controlled win rate extrapolates the fitted length curve to "
                      "equal lengths", stacklevel=3)
    return {"lc_win_rate_v1": 100.0 * rate, "length_one_sided": None if share is None else 100.0 * share}


def _generator_row(generator: str, rows: list[Annotation], lc) -> dict:
    labels = np.array([a.label for a in rows if a.label is not None], dtype=float)
    m = labels.size
    return {
        "generator": generator,
        "n": len(rows),
        "errors": len(rows) - m,
        "win_rate": 100.0 * float(labels.mean()) if m else None,
        "standard_error": 100.0 * float(labels.std(ddof=1) / math.sqrt(m)) if m > 1 else None,
        "lc_win_rate": 100.0 * lc.lc_win_rate if lc else None,
        "lc_standard_error": 100.0 * lc.lc_standard_error if lc and lc.lc_standard_error is not None else None,
        "avg_length": float(np.mean([a.length for a in rows])) if rows else None,  # the leaderboard's column
    }


def score_annotation_files(paths: Sequence[str | Path], length_unit: str = "chars", tokenizer: object = None,
                           *, n_bootstrap: int = 200, seed: int = 0,
                           difficulty: dict[int, float] | None = None) -> list[dict]:
    """`harness judge --annotations FILE...`: read every file, then score all rows together so that
    generators sharing a baseline are fitted jointly.  Rows of the JSON output, rates in percent."""
    if not paths:
        raise HarnessError("--annotations needs at least one file")
    length = length_function(length_unit, tokenizer)
    annotations = [a for path in paths for a in read_annotations(Path(path), length)]
    if not annotations:
        raise DataError(f"no annotation rows in {', '.join(str(p) for p in paths)}")
    return score_annotations(annotations, n_bootstrap=n_bootstrap, seed=seed, difficulty=difficulty)
