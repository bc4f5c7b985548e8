"""harness report on a synthetic MLflow store with known runs and per-prompt artifacts.

Every number is recomputed here independently: means and t-intervals with
numpy/scipy, Welch with scipy.stats.ttest_ind(equal_var=False), the paired
bootstrap with an explicit loop on a different seed (agreement within Monte
Carlo error), and Holm by hand.
"""

from __future__ import annotations

import base64
import json
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats as sps

from harness.cli import main
from harness.report import write_report
from harness.run.tracking import Store

BETAS = ["0.1", "0.5", "0.9"]
SEEDS = [0, 1, 2]
N_PROMPTS = 40
RATE = {"0.1": 0.30, "0.5": 0.45, "0.9": 0.33}  # beta 0.5 is clearly better, 0.9 barely
VAL_LOSS = {"0.1": 1.00, "0.5": 0.90, "0.9": 0.99}
B = 2000


def _log_jsonl(client, run_id, rows, artifact_file):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        client.log_artifact(run_id, str(path), str(Path(artifact_file).parent))


def _arith_artifacts(rng, difficulty, rate):
    """4 samples per prompt; a prompt's chance is rate shifted by its (shared) difficulty."""
    judgments, outputs = [], []
    for i, d in enumerate(difficulty):
        scores = [int(x) for x in rng.random(4) < np.clip(rate + d, 0, 1)]
        judgments.append({"id": f"q{i}", "n": 4, "correct": sum(scores), "scores": scores})
        outputs += [{"id": f"q{i}", "sample": s, "output": "x", "num_tokens": int(rng.integers(2, 9))}
                    for s in range(4)]
    pass1 = float(np.mean([np.mean(j["scores"]) for j in judgments]))
    length = float(np.mean([o["num_tokens"] for o in outputs]))
    return judgments, outputs, pass1, length


def _trial(client, exp_id, parent, trial_id, params, status="FINISHED", **tags):
    run = client.create_run(exp_id, run_name=trial_id, tags={"harness.trial_id": trial_id, "harness.sweep_id": "s1",
                                                             "mlflow.parentRunId": parent, **tags})
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    return run.info.run_id


def _metrics(client, run_id, values, step=0):
    client.log_batch(run_id, metrics=[Metric(k, float(v), 0, step) for k, v in values.items()])


def build_store(root: Path) -> tuple[Store, dict]:
    """Experiment `synth` (3 betas x 3 seeds, base, one failed and one running trial) and `judge` (2 models)."""
    store = Store(f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"))
    client = MlflowClient(store.tracking_uri)
    exp_id = client.create_experiment("synth", artifact_location=(root / "artifacts" / "synth").as_uri())
    parent = client.create_run(exp_id, run_name="sweep-s1", tags={"harness.sweep_id": "s1", "harness.role": "sweep"})
    parent_id = parent.info.run_id
    spec = {"name": "synth", "ablate": {"method.beta": [0.1, 0.5, 0.9]}, "seeds": SEEDS,
            "report": {"equivalence_margin": {"eval/arith/response_length": 1.0}}}
    _log_jsonl(client, parent_id, [], "x/empty.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "resolved_spec.yaml").write_text(yaml.safe_dump(spec))
        client.log_artifact(parent_id, str(Path(tmp) / "resolved_spec.yaml"))
    rng = np.random.default_rng(1234)
    difficulty = rng.uniform(-0.25, 0.25, N_PROMPTS)
    truth = {"pass": {}, "length": {}, "val": {}, "scores": {}}
    for beta in BETAS:
        for seed in SEEDS:
            tid = f"beta{beta}-seed{seed}"
            run_id = _trial(client, exp_id, parent_id, tid, {"method.beta": beta, "train.seed": str(seed),
                                                             "model": "toy://tiny"})
            judgments, outputs, pass1, length = _arith_artifacts(rng, difficulty, RATE[beta])
            val = VAL_LOSS[beta] + 0.02 * rng.standard_normal()
            _log_jsonl(client, run_id, judgments, "judgments/arith.jsonl")
            _log_jsonl(client, run_id, outputs, "outputs/arith.jsonl")
            for step, loss in [(1, 2.0), (5, 1.5), (10, 1.2)]:
                _metrics(client, run_id, {"train/loss": loss + seed * 0.01, "train/kl": 0.1 * step * float(beta),
                                          "train/tokens_per_s": 1000.0 + step}, step)
            _metrics(client, run_id, {"train/peak_memory_mb": 321.0}, step=10)
            _metrics(client, run_id, {"eval/arith/pass_at_1": pass1, "eval/arith/response_length": length,
                                      "val/loss": val})
            client.set_terminated(run_id, "FINISHED")
            truth["pass"][(beta, seed)], truth["length"][(beta, seed)] = pass1, length
            truth["val"][(beta, seed)] = val
            truth["scores"][(beta, seed)] = {j["id"]: np.mean(j["scores"]) for j in judgments}
            truth.setdefault("samples", {})[(beta, seed)] = [j["scores"] for j in judgments]
            truth.setdefault("lengths", {})[(beta, seed)] = {
                f"q{i}": np.mean([o["num_tokens"] for o in outputs if o["id"] == f"q{i}"]) for i in range(N_PROMPTS)}
    base = _trial(client, exp_id, parent_id, "base", {"model": "toy://tiny"})
    judgments, outputs, pass1, length = _arith_artifacts(rng, difficulty, 0.05)
    _log_jsonl(client, base, judgments, "judgments/arith.jsonl")
    _log_jsonl(client, base, outputs, "outputs/arith.jsonl")
    _metrics(client, base, {"eval/arith/pass_at_1": pass1, "eval/arith/response_length": length})
    client.set_terminated(base, "FINISHED")
    truth["base_scores"] = {j["id"]: np.mean(j["scores"]) for j in judgments}
    failed = _trial(client, exp_id, parent_id, "beta0.9-seed3", {"method.beta": "0.9", "train.seed": "3"},
                    **{"harness.error": "injected failure"})
    client.log_metric(failed, "eval/arith/pass_at_1", 0.99)  # must not enter the statistics
    client.set_terminated(failed, "FAILED")
    _trial(client, exp_id, parent_id, "beta0.5-seed4", {"method.beta": "0.5", "train.seed": "4"})
    client.set_terminated(parent_id, "FINISHED")
    truth["parent"] = parent_id

    judge_id = client.create_experiment("judge", artifact_location=(root / "artifacts" / "judge").as_uri())
    truth["judge"] = {}
    for name, p in [("modelA", 0.5), ("modelB", 0.7)]:
        run_id = client.create_run(judge_id, run_name=name).info.run_id
        verdicts = [float(rng.choice([0.0, 0.5, 1.0], p=[1 - p, 0.0, p]) if i % 5 else 0.5) for i in range(N_PROMPTS)]
        rows = [{"id": f"q{i}", "scores": [v], "verdicts": ["A", "B"]} for i, v in enumerate(verdicts)]
        _log_jsonl(client, run_id, rows, "judgments/pairwise.jsonl")
        client.log_metric(run_id, "eval/pairwise/win_rate", float(np.mean(verdicts)))
        client.set_terminated(run_id, "FINISHED")
        truth["judge"][name] = np.array(verdicts)
    return store, truth


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    store, truth = build_store(root)
    out = root / "out"
    markdown = write_report(store, ["synth", "judge"], out, "all", plan=0.1)
    csv = pd.read_csv(out / "report.csv", dtype={"level": str})
    return {"store": store, "truth": truth, "out": out, "md": markdown, "csv": csv}


def _rows(csv, table_axis, row_type, metric, experiment="synth"):
    sel = csv[(csv["axis"] == table_axis) & (csv["row_type"] == row_type) & (csv["metric"] == metric)
              & (csv["experiment"] == experiment)]
    return sel.set_index("level")


def test_level_means_and_t_intervals(report):
    truth, csv = report["truth"], report["csv"]
    for metric, key in [("eval/arith/pass_at_1", "pass"), ("val/loss", "val"), ("eval/arith/response_length", "length")]:
        cells = _rows(csv, "method.beta", "level", metric)
        for beta in BETAS:
            x = np.array([truth[key][(beta, s)] for s in SEEDS])
            low, high = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
            row = cells.loc[beta]
            assert row["n"] == 3
            assert row["mean"] == pytest.approx(x.mean(), rel=1e-9)
            assert row["std"] == pytest.approx(x.std(ddof=1), rel=1e-9)
            assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))


def test_welch_where_no_per_prompt_scores(report):
    truth, csv = report["truth"], report["csv"]
    comps = _rows(csv, "method.beta", "comparison", "val/loss")
    ref = np.array([truth["val"][("0.1", s)] for s in SEEDS])
    for beta in ("0.5", "0.9"):
        x = np.array([truth["val"][(beta, s)] for s in SEEDS])
        res = sps.ttest_ind(x, ref, equal_var=False)
        ci = res.confidence_interval(0.95)
        row = comps.loc[beta]
        assert row["test"] == "welch"
        assert row["p"] == pytest.approx(res.pvalue, rel=1e-9)
        assert row["diff"] == pytest.approx(x.mean() - ref.mean(), rel=1e-9)
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))


def _independent_bootstrap(d, b, seed):
    """A plain loop: resample prompts, recompute the mean difference, test against the shifted null."""
    rng = np.random.default_rng(seed)
    observed = d.mean()
    reps = np.empty(b)
    for i in range(b):
        reps[i] = d[rng.choice(len(d), size=len(d), replace=True)].mean()
    p = (1 + np.sum(np.abs(reps - observed) >= abs(observed))) / (b + 1)
    return observed, np.percentile(reps, [2.5, 97.5]), p


@pytest.mark.parametrize("metric,key", [("eval/arith/pass_at_1", "scores"), ("eval/arith/response_length", "lengths")])
def test_seed_paired_t_over_matched_seeds(report, metric, key):
    """3 seeds on both sides, the same seeds: the t-test of the per-seed differences (scipy's ttest_rel)."""
    truth, csv = report["truth"], report["csv"]
    comps = _rows(csv, "method.beta", "comparison", metric)
    ids = [f"q{i}" for i in range(N_PROMPTS)]

    def seed_means(beta):
        return np.array([np.mean([truth[key][(beta, s)][i] for i in ids]) for s in SEEDS])

    for beta in ("0.5", "0.9"):
        a, r = seed_means(beta), seed_means("0.1")
        res = sps.ttest_rel(a, r)
        ci = res.confidence_interval(0.95)
        row = comps.loc[beta]
        assert row["test"] == "seed-paired t (3 seeds)" and row["n"] == N_PROMPTS
        assert row["diff"] == pytest.approx((a - r).mean(), rel=1e-9)
        assert row["p"] == pytest.approx(res.pvalue, rel=1e-9)
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    if metric.endswith("pass_at_1"):
        assert comps.loc["0.5", "p"] < 0.05


def _hand_holm(p):
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_holm_over_the_primary_family_and_bh_over_the_rest(report):
    """Holm's family is the headline metric (arith: pass_at_1) x levels of a table; the rest get BH, labelled."""
    csv = report["csv"]
    comps = csv[csv["row_type"] == "comparison"]
    assert len(set(comps["table"])) >= 3
    for _, table in comps.groupby("table"):
        primary = table[table["family"] == "primary"].dropna(subset=["p"])
        assert list(primary["p_holm"]) == pytest.approx(_hand_holm(list(primary["p"])), rel=1e-12)
        secondary = table[table["family"] == "secondary"].dropna(subset=["p"])
        assert list(secondary["p_bh"]) == pytest.approx(list(sps.false_discovery_control(secondary["p"])), rel=1e-12)
        assert secondary["p_holm"].isna().all() and primary["p_bh"].isna().all()
    beta = comps[comps["axis"] == "method.beta"]
    assert set(beta.loc[beta["family"] == "primary", "metric"]) == {"eval/arith/pass_at_1"}
    assert (beta["family"] == "primary").sum() == 2  # two levels x one primary metric
    assert set(comps[comps["axis"] == "model"]["family"]) == {"primary"}  # pairwise: win_rate is its headline


def test_judge_only_models_and_base_comparison(report):
    truth, csv = report["truth"], report["csv"]
    row = _rows(csv, "model", "comparison", "eval/pairwise/win_rate", experiment="judge").loc["modelB"]
    d = truth["judge"]["modelB"] - truth["judge"]["modelA"]
    observed, (low, high), _ = _independent_bootstrap(d, B, seed=4242)
    assert row["reference"] == "modelA" and row["diff"] == pytest.approx(observed)
    assert row["test"] == f"paired bootstrap (B={B})" and "conditional on the trained checkpoint" in row["note"]
    se = d.std(ddof=1) / math.sqrt(len(d))
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low, abs=0.25 * se), pytest.approx(high, abs=0.25 * se))
    # p: the paired t over prompts, no 1/(B+1) floor
    assert row["p"] == pytest.approx(sps.ttest_rel(truth["judge"]["modelB"], truth["judge"]["modelA"]).pvalue, rel=1e-9)
    vs_base = _rows(csv, "run (vs base)", "comparison", "eval/arith/pass_at_1").loc["beta0.5-seed1"]
    d = np.array([truth["scores"][("0.5", 1)][f"q{i}"] - truth["base_scores"][f"q{i}"] for i in range(N_PROMPTS)])
    assert vs_base["diff"] == pytest.approx(d.mean())


def test_partial_sweep_statuses_and_markdown(report):
    md = report["md"]
    assert re.search(r"\| beta0.9-seed3 +\| trial +\| FAILED", md) and "injected failure" in md
    assert re.search(r"\| beta0.5-seed4 +\| trial +\| RUNNING", md)
    assert "1 failed" in md and "1 running" in md
    assert "Holm" in md and "t-interval" in md and "paired bootstrap" in md and "Welch" in md
    cost = md.split("## Cost")[1].split("##")[0]
    assert "synth:beta0.1-seed0" in cost and "321" in cost and "1005" in cost  # peak memory and the mean of tokens/s (1001, 1005, 1010)
    assert (report["out"] / "report.md").read_text() == md


def test_html_embeds_every_table_and_image(report):
    out, md = report["out"], report["md"]
    page = (out / "report.html").read_text()
    n_tables = len(re.findall(r"^\|[- |]+\|$", md, flags=re.MULTILINE))  # one separator line per markdown table
    assert n_tables >= 8 and page.count("<table") == n_tables
    pngs = sorted(p.stem for p in (out / "plots").glob("*.png"))
    images = re.findall(r'<figure id="([^"]+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert sorted(name for name, _ in images) == pngs
    for name, data in images:
        assert base64.b64decode(data) == (out / "plots" / f"{name}.png").read_bytes()
    for expected in ("curves-train_loss", "curves-train_kl", "lengths-arith", "levels-synth_method.beta"):
        assert expected in pngs
    assert "src=\"plots/" not in page and "http" not in page.split("<body>")[1]


def test_files_are_logged_on_the_sweep_parent(report):
    client = MlflowClient(report["store"].tracking_uri)
    names = {a.path for a in client.list_artifacts(report["truth"]["parent"], "report")}
    assert {"report/report.md", "report/report.html", "report/report.csv", "report/runs.csv", "report/plots"} <= names


def test_cli_reference_and_bad_reference(tmp_path, capsys):
    store, _ = build_store(tmp_path)
    args = ["report", "synth", "--tracking-uri", store.tracking_uri, "--out", str(tmp_path / "o"), "--format", "csv"]
    assert main(args + ["--reference", "method.beta=0.5"]) == 0
    csv = pd.read_csv(tmp_path / "o" / "report.csv", dtype={"level": str})
    beta = csv[(csv["axis"] == "method.beta") & (csv["row_type"] == "comparison")]
    assert set(beta["reference"]) == {"0.5"} and set(beta["level"]) == {"0.1", "0.9"}
    assert "| method.beta" in capsys.readouterr().out
    assert main(args + ["--plan", "0.05"]) == 0
    plan = pd.read_csv(tmp_path / "o" / "report.csv", dtype={"level": str}).query("row_type == 'plan'")
    assert len(plan) and (plan["target_effect"] == 0.05).all() and plan["prompts_needed"].notna().all()
    assert "Power and planning" in capsys.readouterr().out
    assert main(args + ["--reference", "method.beta=0.7"]) == 2
    assert "no such level" in capsys.readouterr().err
    assert main(args + ["--reference", "lora.rank=8"]) == 2
    assert "not an ablation axis" in capsys.readouterr().err
    assert main(["report", "nope", "--tracking-uri", store.tracking_uri]) == 2
    assert "experiment 'nope' not found" in capsys.readouterr().err
    assert main(["report", "synt", "--tracking-uri", store.tracking_uri, "--out", str(tmp_path / "o2")]) == 2
    assert "experiment 'synt' not found" in (err := capsys.readouterr().err) and "did you mean 'synth'?" in err


def test_default_format_writes_markdown_and_html_and_says_where(tmp_path, capsys):
    store, _ = build_store(tmp_path)
    out = tmp_path / "o"
    assert main(["report", "synth", "--tracking-uri", store.tracking_uri, "--out", str(out)]) == 0
    assert (out / "report.md").is_file() and (out / "report.html").is_file() and not (out / "report.csv").exists()
    assert f"report written to {out.resolve()}: report.md (+ plots/), report.html" in capsys.readouterr().err


def test_runs_csv_holds_numbers_with_standard_errors_beside_them(report):
    runs = pd.read_csv(report["out"] / "runs.csv")
    assert runs["eval/arith/pass_at_1"].dtype == float
    assert not runs["eval/arith/pass_at_1"].astype(str).str.contains("±").any()
    trial = runs[runs["run"] == "beta0.1-seed0"].iloc[0]
    assert trial["eval/arith/pass_at_1"] == pytest.approx(report["truth"]["pass"][("0.1", 0)])


def test_judge_metric_figures_are_drawn(tmp_path):
    """Runs carrying judge metrics get the reward/KL frontier, raw-vs-LC and pass@k-over-k figures."""
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"))
    client = MlflowClient(store.tracking_uri)
    exp_id = client.create_experiment("judged", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp_id, run_name="sweep-j", tags={"harness.sweep_id": "j"}).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"name": "judged", "ablate": {"method.beta": [0.1, 0.5]}, "seeds": [0]}
        (Path(tmp) / "resolved_spec.yaml").write_text(yaml.safe_dump(spec))
        client.log_artifact(parent, str(Path(tmp) / "resolved_spec.yaml"))
    for beta, win, lc, kl in [(0.1, 0.7, 0.6, 0.4), (0.5, 0.6, 0.58, 0.1)]:
        run_id = _trial(client, exp_id, parent, f"beta{beta}-seed0", {"method.beta": str(beta), "train.seed": "0"})
        _metrics(client, run_id, {"eval/alpaca/win_rate": win, "eval/alpaca/lc_win_rate": lc, "eval/alpaca/kl": kl,
                                  "eval/arith/pass_at_1": 0.3, "eval/arith/pass_at_4": 0.5})
        client.set_terminated(run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    out = tmp_path / "out"
    write_report(store, ["judged"], out, "all")
    pngs = {p.stem for p in (out / "plots").glob("*.png")}
    assert {"frontier-win_rate-kl", "alpaca-raw-vs-lc", "pass_at_k-arith"} <= pngs
    page = (out / "report.html").read_text()
    for name in ("frontier-win_rate-kl", "alpaca-raw-vs-lc", "pass_at_k-arith"):
        assert f'<figure id="{name}">' in page


def test_tost_against_scipy_and_the_report_says_what_it_controls(report):
    """report.equivalence_margin {response_length: 1.0}: TOST = max of scipy's one-sided t-tests of the per-seed
    differences against -1 (greater) and +1 (less); the markdown names the error rates and their families."""
    truth, csv, md = report["truth"], report["csv"], report["md"]
    comps = _rows(csv, "method.beta", "comparison", "eval/arith/response_length")
    ids = [f"q{i}" for i in range(N_PROMPTS)]
    for beta in ("0.5", "0.9"):
        d = np.array([np.mean([truth["lengths"][(beta, s)][i] - truth["lengths"][("0.1", s)][i] for i in ids])
                      for s in SEEDS])
        expected = max(sps.ttest_1samp(d, -1.0, alternative="greater").pvalue,
                       sps.ttest_1samp(d, 1.0, alternative="less").pvalue)
        assert comps.loc[beta, "p_tost"] == pytest.approx(expected, rel=1e-9)
    assert comps["margin"].eq(1.0).all() and "p (TOST, ±margin)" in md
    assert "family-wise error rate over the 2 primary comparisons" in md and "false discovery rate" in md
    assert "Where the noise comes from" in md and "Power and planning" in md
    plan = csv[(csv["row_type"] == "plan") & (csv["axis"] == "method.beta")]
    assert set(plan["metric"]) == {"eval/arith/pass_at_1"} and (plan["target_effect"] == 0.1).all()


def test_sampling_component_from_the_samples_of_each_prompt(report):
    """Each arith prompt has 4 samples: sampling var = mean over prompts of s²/4 (ddof 1), averaged over seeds."""
    csv, truth = report["csv"], report["truth"]
    v = csv[(csv["row_type"] == "variance") & (csv["axis"] == "method.beta")
            & (csv["metric"] == "eval/arith/pass_at_1")].set_index("level")
    for beta in BETAS:
        per_seed = [np.mean([np.var(s, ddof=1) / 4 for s in truth["samples"][(beta, seed)]]) for seed in SEEDS]
        assert v.loc[beta, "sampling_var"] == pytest.approx(np.mean(per_seed), rel=1e-9)
    assert _rows(csv, "method.beta", "variance", "eval/arith/response_length")["sampling_var"].isna().all()


def test_a_model_judged_by_two_commands_is_one_row(tmp_path):
    """`harness judge --suite alpaca` then `--suite mtbench` on the same generator leave two runs with one
    label; the report stopped on "Index contains duplicate entries".  They are one model row now, each
    metric from the run that logged it."""
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"))
    client = MlflowClient(store.tracking_uri)
    exp_id = client.create_experiment("judge", artifact_location=(tmp_path / "artifacts").as_uri())
    for name, metric, value in [("my-model", "eval/alpaca/win_rate", 0.6), ("my-model", "eval/mtbench/win_rate", 0.4),
                                ("other", "eval/alpaca/win_rate", 0.5), ("other", "eval/mtbench/win_rate", 0.45)]:
        run_id = client.create_run(exp_id, run_name=name, tags={"harness.role": "judge",
                                                                "harness.generator": name}).info.run_id
        client.log_metric(run_id, metric, value)
        client.set_terminated(run_id, "FINISHED")
    out = tmp_path / "out"
    write_report(store, ["judge"], out, "csv", log_artifacts=False)
    cells = pd.read_csv(out / "report.csv").query("row_type == 'level'").set_index(["level", "metric"])
    assert cells.loc[("my-model", "eval/alpaca/win_rate"), "mean"] == 0.6
    assert cells.loc[("my-model", "eval/mtbench/win_rate"), "mean"] == 0.4
    assert (cells.loc["my-model", "n"] == 1).all()  # one run per metric, not two "seeds"
