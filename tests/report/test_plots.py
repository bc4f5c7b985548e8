"""The report's figures as matplotlib objects: axes per family, points with interval bars, labels.

Each test draws a figure from hand-made inputs and inspects the ``matplotlib``
figure the PNG was rendered from (``Figure.figure``): how many axes, which lines
each holds, whether interval bars exist, and what the labels say.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from matplotlib.container import ErrorbarContainer
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from harness.report import plots
from harness.report.collect import collect
from harness.report.sections import figures
from harness.run.tracking import Store


def _level_table():
    """Two metrics at three categorical levels (2+ seeds: every cell has a t-interval)."""
    rows = []
    for metric, base in (("eval/arith/pass_at_1", 0.3), ("eval/arith/kl", -0.2)):
        for i, level in enumerate(["0", "4", "16"]):
            mean = base + 0.05 * i
            rows.append({"metric": metric, "level": level, "mean": mean, "ci_low": mean - 0.02,
                         "ci_high": mean + 0.03, "n": 3})
    return SimpleNamespace(cells=pd.DataFrame(rows), levels=["0", "4", "16"], title="exp: lora.rank")


def test_levels_are_points_with_interval_bars_and_no_connecting_line():
    fig = plots.metric_by_level(_level_table(), ["eval/arith/pass_at_1", "eval/arith/kl"]).figure
    assert len(fig.axes) == 2
    for ax in fig.axes:
        containers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(containers) == 1 and containers[0].has_yerr
        data_line = containers[0].lines[0]
        assert list(data_line.get_xdata()) == [0, 1, 2]  # one point per level
        # No Line2D draws a line between levels: the data line and the caps are markers only.
        assert all(line.get_linestyle() == "None" for line in ax.get_lines())
        segments = containers[0].lines[2][0].get_segments()  # the bars: one vertical segment per level
        assert len(segments) == 3 and all(s[0][0] == s[1][0] for s in segments)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "eval/arith/pass_at_1"
    assert titles[1] == "eval/arith/kl (k1 log-ratio, can be < 0)"
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["0", "4", "16"]


def test_training_curves_put_each_loss_family_on_its_own_axes():
    """SFT starts near 10 and DPO near 0.69: one panel per method, so neither flattens the other."""
    histories = {"r8/sft": {"train/loss": [(1, 10.7), (5, 4.0), (10, 2.1)]},
                 "r16/sft": {"train/loss": [(1, 10.6), (5, 3.8), (10, 2.0)]},
                 "r8/dpo": {"train/loss": [(1, 0.693), (5, 0.60), (10, 0.55)]}}
    families = {"r8/sft": "sft", "r16/sft": "sft", "r8/dpo": "dpo"}
    fig = plots.training_curves(histories, "train/loss", families).figure
    assert [ax.get_title() for ax in fig.axes] == ["dpo", "sft"]
    dpo, sft = fig.axes
    assert [line.get_label() for line in dpo.get_lines()] == ["r8/dpo"]
    assert [line.get_label() for line in sft.get_lines()] == ["r8/sft", "r16/sft"]
    assert dpo.get_ylim()[1] < 1 and sft.get_ylim()[0] > 1
    assert all(ax.get_xlabel() == "step" for ax in fig.axes)


def test_kl_axis_names_its_estimator():
    k1 = "k1 on the dataset responses: batch mean over chosen and rejected of sum_t (log pi - log pi_ref)"
    histories = {"a/dpo": {"train/kl": [(1, 0.0), (5, -0.3)]}, "a/kto": {"train/kl": [(1, 0.0), (5, 0.2)]}}
    ylabels = {"dpo": plots.estimator_label("train/kl", k1), "kto": plots.estimator_label("train/kl", "kto z0: ...")}
    fig = plots.training_curves(histories, "train/kl", {"a/dpo": "dpo", "a/kto": "kto"}, ylabels).figure
    dpo, kto = fig.axes
    assert dpo.get_ylabel() == "train/kl: k1 on the dataset responses\n(log-ratio mean, can be < 0)"
    assert kto.get_ylabel() == "train/kl: kto z0"
    assert plots.estimator_label("train/kl", None) == "train/kl (estimator not recorded)"


def test_length_distributions_are_small_multiples_on_shared_bins():
    lengths = {"base": [3, 3, 3, 4], "sft": [3, 3, 3, 4], "dpo": [8, 9, 9, 12]}  # base and sft identical
    fig = plots.length_distributions(lengths, "arith").figure
    assert [ax.get_title() for ax in fig.axes] == ["base", "sft", "dpo"]
    limits = {ax.get_xlim() for ax in fig.axes}
    assert len(limits) == 1  # shared x axis: the panels compare directly
    for ax in fig.axes:
        assert len(ax.patches) == 1  # one histogram per panel, nothing drawn over it
    assert fig.axes[0].get_xlabel() == "response length (tokens)" and fig.axes[0].get_ylabel() == "samples"


def test_report_figures_group_curves_by_the_method_tag_and_label_kl_from_the_tag(tmp_path):
    """Through collect(): stage runs tagged harness.method sft / dpo, the dpo one with harness.kl_estimator."""
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"))
    client = MlflowClient(store.tracking_uri)
    exp_id = client.create_experiment("fam", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp_id, run_name="sweep-f", tags={"harness.sweep_id": "f", "harness.role": "sweep"})
    parent_id = parent.info.run_id
    trial = client.create_run(exp_id, run_name="t0", tags={"harness.trial_id": "t0", "harness.sweep_id": "f",
                                                           "mlflow.parentRunId": parent_id,
                                                           "harness.method": "dpo"}).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "arith.jsonl"
        path.write_text("".join(json.dumps({"id": f"q{i}", "sample": 0, "output": "1", "num_tokens": 2 + i % 3})
                                + "\n" for i in range(6)))
        client.log_artifact(trial, str(path), "outputs")
    client.log_metric(trial, "eval/arith/pass_at_1", 0.5)
    k1 = "k1 on the dataset responses: batch mean over chosen and rejected of sum_t (log pi - log pi_ref)"
    for stage, method, losses in (("sft", "sft", [10.7, 3.0]), ("dpo", "dpo", [0.693, 0.5])):
        tags = {"harness.stage": stage, "harness.stage_of": "t0", "harness.method": method,
                "mlflow.parentRunId": trial}
        if method == "dpo":
            tags["harness.kl_estimator"] = k1
        run = client.create_run(exp_id, run_name=f"t0/{stage}", tags=tags).info.run_id
        metrics = [Metric("train/loss", v, 0, step) for step, v in zip((1, 10), losses)]
        if method == "dpo":
            metrics += [Metric("train/kl", v, 0, step) for step, v in zip((1, 10), (0.0, -0.4))]
        client.log_batch(run, metrics=metrics)
        client.set_terminated(run, "FINISHED")
    client.set_terminated(trial, "FINISHED")
    client.set_terminated(parent_id, "FINISHED")
    drawn = {f.name: f for f in figures(collect(store, ["fam"])) if f is not None}
    loss = drawn["curves-train_loss"].figure
    assert [ax.get_title() for ax in loss.axes] == ["dpo", "sft"]
    assert [line.get_label() for line in loss.axes[1].get_lines()] == ["t0/sft"]
    kl = drawn["curves-train_kl"].figure
    assert [ax.get_ylabel() for ax in kl.axes] == ["train/kl: k1 on the dataset responses\n(log-ratio mean, can be < 0)"]
    lengths = drawn["lengths-arith"].figure
    assert len(lengths.axes) == 1 and lengths.axes[0].get_title() == "t0"
