"""What a report reads from MLflow: runs as rows, the sweep's axes, per-prompt artifacts, histories.

Rows come from ``MlflowClient.search_runs`` (the same query as
``mlflow.search_runs``, on an explicit client so the process's tracking URI is
left alone).  Each report row is one of

- ``trial``: a sweep trial run (tag ``harness.trial_id``);
- ``base``: the starting model (``harness.trial_id = base``);
- ``stage``: a stage run of a multi-stage trial that has its own eval metrics
  (``eval.after: every_stage``), named ``TRIAL/STAGE``;
- ``model``: a run of a judge-only experiment (no trial ids), one per model.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from harness.errors import HarnessError
from harness.run.tracking import Store, _param_value, _quiet_mlflow

SEED_PARAM = "params.train.seed"
# Params that say where or how fast a run went, not what it computed: never a reason to split a level.
NOT_CONFIG = ("results_dir", "tracking.", "resources.", "report.", "judge.concurrency", "judge.max_retries",
              "judge.timeout_s", "judge.api_key_env")
LABEL_KEYS = ("tags.harness.generator", "tags.harness.model", "params.generator", "params.model")


def client_for(store: Store):
    from mlflow.tracking import MlflowClient  # lazy: mlflow takes seconds to import

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file otherwise
    client = MlflowClient(tracking_uri=store.tracking_uri)
    _quiet_mlflow()
    return client


def runs_frame(client, experiments: list[str]) -> pd.DataFrame:
    """Every run of ``experiments`` as one row: experiment, run_id, run_name, status, times, params/metrics/tags."""
    records = []
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            names = [e.name for e in client.search_experiments() if e.name != "Default"]
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (experiments: {', '.join(names) or 'none'})"
            raise HarnessError(f"experiment {name!r} not found in {client.tracking_uri}{hint}")
        for run in client.search_runs([exp.experiment_id], max_results=50_000):
            info = run.info
            record = {"experiment": name, "run_id": info.run_id, "run_name": info.run_name,
                      "status": info.status, "start_time": info.start_time, "end_time": info.end_time,
                      "artifact_uri": info.artifact_uri}
            record.update({f"params.{k}": v for k, v in run.data.params.items()})
            record.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
            record.update({f"tags.{k}": v for k, v in run.data.tags.items()})
            records.append(record)
    df = pd.DataFrame.from_records(records)
    # Plain object columns for text: pandas' arrow strings make every row access (iterrows) convert them.
    text = [c for c in df.columns if not c.startswith("metrics.") and c not in ("start_time", "end_time")]
    return df.astype({c: object for c in text})


def trial_config(trial_id: str) -> str:
    """The part of a trial id that names its configuration: the hash suffix (``grid._trial_id``).

    ``beta0.1-seed0-1a2b3c4d`` and ``beta0.1-steps40-seed0-1a2b3c4d`` are one
    trial: the second sweep added the axis ``steps`` whose first level is the
    old default, so the name grew but the configuration hash did not change.
    Ids without a hash (``base``) stand for themselves.
    """
    match = re.search(r"-([0-9a-f]{8})$", trial_id)
    return match.group(1) if match else trial_id


def base_config(row: pd.Series) -> str:
    """What a ``base`` run's results depend on: the model and the eval settings (``model``, ``data.eval``,
    ``eval.*`` params), as one string; a sweep with other training settings evaluates the same base."""
    keys = sorted(k for k in row.index if isinstance(k, str) and base_key(k) and isinstance(row[k], str))
    return "base|" + "|".join(f"{k}={row[k]}" for k in keys)


def latest_trials(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with one run per (experiment, trial configuration): the newest FINISHED one, else the newest.

    Two sweeps of one experiment (a spec that gained an ablation level or a
    whole axis, say) log the trials they share twice, with the same
    configuration hash and, through the caches, the same results; a report
    counts each trial once (``trial_config``), under the newer run's id.  Runs
    nested under a dropped trial run (its stages) go with it.  ``base`` runs are
    one per ``base_config``: a base evaluated on other prompts (``--set
    eval.arith.limit=50``) is another row, not a replacement.
    """
    trial_id = column(runs, "tags.harness.trial_id")
    config = pd.Series([(base_config(r) if t == "base" else trial_config(t)) if isinstance(t, str) else None
                        for t, (_, r) in zip(trial_id, runs.iterrows())], index=runs.index, dtype=object)
    trials = pd.DataFrame({"run_id": runs["run_id"], "experiment": runs["experiment"], "trial": config,
                           "finished": runs["status"] == "FINISHED", "start": runs["start_time"]})[trial_id.notna()]
    keep = (trials.sort_values(["finished", "start"], ascending=False)
            .drop_duplicates(["experiment", "trial"])["run_id"])
    dropped = set(trials["run_id"]) - set(keep)
    if not dropped:
        return runs
    parent = column(runs, "tags.mlflow.parentRunId")
    return runs[~runs["run_id"].isin(dropped) & ~parent.isin(dropped)].reset_index(drop=True)


def column(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series([None] * len(df), index=df.index, dtype=object)


def eval_metric_columns(df: pd.DataFrame) -> list[str]:
    """``metrics.eval/...`` columns, without the ``_se`` companions, sorted."""
    return sorted(c for c in df.columns if c.startswith("metrics.eval/") and not c.endswith("_se"))


def report_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows a report shows, with ``kind`` and ``label`` columns, per experiment in a stable order."""
    if runs.empty:
        raise HarnessError("no runs found")
    runs = runs.copy()
    trial_id = column(runs, "tags.harness.trial_id")
    stage = column(runs, "tags.harness.stage")
    metrics = eval_metric_columns(runs)
    has_eval = runs[metrics].notna().any(axis=1) if metrics else pd.Series(False, index=runs.index)
    is_sweep = column(runs, "tags.harness.role") == "sweep"
    sweep_exps = set(runs.loc[trial_id.notna() | is_sweep, "experiment"])
    runs["kind"] = None
    runs.loc[trial_id.notna(), "kind"] = "trial"
    runs.loc[trial_id == "base", "kind"] = "base"
    runs.loc[stage.notna() & has_eval, "kind"] = "stage"
    judge_only = ~runs["experiment"].isin(sweep_exps) & has_eval & stage.isna()
    runs.loc[judge_only, "kind"] = "model"
    rows = runs[runs["kind"].notna()].copy()
    rows["label"] = [_label(r) for _, r in rows.iterrows()]
    for _, bases in rows[rows["kind"] == "base"].groupby("experiment"):
        if len(bases) > 1:
            rows.loc[bases.index, "label"] = [
                "base (" + ", ".join(f"{k}={v}" for k, v in d.items()) + ")" for d in differences(bases, base_key)]
    order = {"base": 0, "trial": 1, "stage": 1, "model": 1}
    rows["_order"] = rows["kind"].map(order)
    rows = rows.sort_values(["experiment", "_order", "label"]).drop(columns="_order")
    return rows.reset_index(drop=True)


def base_key(col: str) -> bool:
    """The params ``base_config`` reads."""
    return col in ("params.model", "params.data.eval") or col.startswith("params.eval.")


def differences(rows: pd.DataFrame, keep=lambda col: True) -> list[dict[str, str]]:
    """Per row, ``{key: value}`` for each param (``keep(col)``) whose value is not the same in all ``rows``."""
    cols = [c for c in rows.columns if c.startswith("params.") and keep(c) and rows[c].fillna("").nunique() > 1]
    return [{c[len("params."):]: r[c] for c in cols} for _, r in rows.iterrows()]


def same_eval(row: pd.Series, base: pd.Series) -> bool:
    """Whether ``row`` was evaluated as ``base`` was: equal on every eval param both runs logged."""
    cols = [c for c in base.index if isinstance(c, str) and c.startswith("params.") and base_key(c)
            and isinstance(base[c], str) and isinstance(row.get(c), str)]
    return all(row[c] == base[c] for c in cols)


def _label(row: pd.Series) -> str:
    if row["kind"] in ("trial", "base"):
        return str(row["tags.harness.trial_id"])
    if row["kind"] == "stage":
        return f"{row.get('tags.harness.stage_of')}/{row['tags.harness.stage']}"
    for key in LABEL_KEYS:
        value = row.get(key)
        if isinstance(value, str) and value:
            return value
    return str(row["run_name"] or row["run_id"])


def parent_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The sweep parent runs (tag ``harness.role = sweep``), one per experiment and sweep id."""
    return runs[column(runs, "tags.harness.role") == "sweep"]


def sweep_spec(client, runs: pd.DataFrame, experiment: str) -> dict | None:
    """The newest parent run's ``resolved_spec.yaml`` of ``experiment``, or None (judge-only, or not logged)."""
    parents = parent_runs(runs)
    parents = parents[parents["experiment"] == experiment].sort_values("start_time", ascending=False)
    from mlflow.exceptions import MlflowException

    for run_id in parents["run_id"]:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(run_id, "resolved_spec.yaml", tmp)
            except (MlflowException, OSError):  # an older parent without the artifact: try the next
                continue
            return yaml.safe_load(Path(path).read_text())
    return None


def axes_and_levels(trials: pd.DataFrame, spec: dict | None) -> dict[str, list[str]]:
    """Ablation axis (param column) -> its levels in the spec's ``ablate`` order, for axes that vary.

    Without a logged spec, every param that varies across the trials is an axis
    (seed params excluded: ``seeds`` is the replicate axis), levels sorted
    numerically where they all parse as numbers.
    """
    out: dict[str, list[str]] = {}
    if spec and spec.get("ablate"):
        for key, values in spec["ablate"].items():
            col = f"params.{key}"
            present = set(column(trials, col).dropna())
            levels = [v for v in (_param_value(x) for x in values) if v in present]
            levels += sorted(present - set(levels))
            if len(levels) > 1:
                out[col] = levels
        return out
    for col in (c for c in trials.columns if c.startswith("params.") and not is_seed_param(c)):
        present = sorted(set(trials[col].dropna()))
        if len(present) > 1:
            out[col] = sorted(present, key=_numeric_key)
    return out


def is_seed_param(col: str) -> bool:
    """Whether a param column is the seed: ``train.seed``, or a stage's copy of it (``stages.sft.train.seed``:
    ``seeds`` writes the trial's seed into every stage)."""
    return col == SEED_PARAM or (col.startswith("params.stages.") and col.endswith(".train.seed"))


def config_axes(trials: pd.DataFrame, axes: dict[str, list[str]]) -> dict[str, list[str]]:
    """Params that differ between trials sharing every level of ``axes``, seed aside: axis -> levels.

    A level pools only runs whose configuration differs in the seed alone.  A
    ``harness train --set stages.sft.train.max_steps=30`` (or a sweep with
    ``--set train.max_steps=20``) into an experiment logs runs at the same
    ablation levels but another configuration; each param in which they differ
    becomes one more axis, so those runs are other rows of other tables (named
    by what differs in the table title), never extra seeds of a level.
    """
    params = [c for c in trials.columns if c.startswith("params.") and not is_seed_param(c) and c not in axes
              and not c[len("params."):].startswith(NOT_CONFIG)]
    keys = list(axes)
    groups = trials.groupby([trials[k].fillna("") for k in keys], dropna=False) if keys else [(None, trials)]
    varying = set()
    for _, group in groups:
        for col in params:
            if group[col].nunique() > 1:  # a run that did not log the param does not count as differing
                varying.add(col)
    return {col: sorted(set(trials[col].dropna()), key=_numeric_key) for col in sorted(varying)}


def _numeric_key(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def read_jsonl(local: Path, where: str) -> list[dict]:
    """The rows of a downloaded JSONL artifact; a bad line is an error naming ``where`` and the line."""
    rows = []
    for i, line in enumerate(local.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{where}:{i}: not valid JSON ({exc.msg})") from exc
    return rows


def suite_artifacts(artifact_uri: str, run_label: str, tmp: Path) -> dict[str, dict[str, list[dict]]]:
    """``{suite: {"judgments": rows, "outputs": rows}}`` for every suite a run logged.

    Reads the run's artifact repository directly (one listing per folder, no
    tracking-store round trip per file).
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(artifact_uri)
    tmp.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, list[dict]]] = {}
    for kind in ("judgments", "outputs"):
        for art in repo.list_artifacts(kind):
            if art.path.endswith(".jsonl") and not art.is_dir:
                local = Path(repo.download_artifacts(art.path, str(tmp)))
                out.setdefault(Path(art.path).stem, {})[kind] = read_jsonl(local, f"run {run_label}: {art.path}")
    return out


def metric_history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, by step."""
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
