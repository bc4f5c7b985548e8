"""A level pools only runs whose configuration differs in the seed alone (issue 13, defect 0).

Stores built here mimic what ``harness train --set ...`` and ``harness sweep --set ...``
log into an experiment that already holds a sweep: same ablation levels, other
configuration.  Before the fix such runs became extra "seeds" of a level (two runs,
both seed 0) and a newer base evaluated on 50 prompts replaced the 500-prompt one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from mlflow.tracking import MlflowClient

from harness.report import write_report
from harness.run.tracking import Store
from tests.report.test_report import _log_jsonl, _metrics, _trial


def _run(client, exp_id, parent, trial_id, params, n_prompts, rate, rng):
    run_id = _trial(client, exp_id, parent, trial_id, {"model": "toy://tiny", **params})
    scores = (rng.random(n_prompts) < rate).astype(int)
    _log_jsonl(client, run_id, [{"id": f"q{i}", "scores": [int(s)]} for i, s in enumerate(scores)],
               "judgments/arith.jsonl")
    _metrics(client, run_id, {"eval/arith/pass_at_1": float(scores.mean()), "eval/arith/num_prompts": n_prompts})
    client.set_terminated(run_id, "FINISHED")


def _parent(client, exp_id, name, root: Path) -> str:
    """A sweep parent run with its resolved spec (ablate: method.beta), as harness logs it."""
    parent = client.create_run(exp_id, run_name=name, tags={"harness.role": "sweep"}).info.run_id
    path = root / "resolved_spec.yaml"
    path.write_text(yaml.safe_dump({"name": "qs", "ablate": {"method.beta": [0.1, 0.5]}, "seeds": [0]}))
    client.log_artifact(parent, str(path))
    return parent


def _store(root: Path, second: str) -> Store:
    """A sweep (beta 0.1/0.5, seed 0, max_steps 1200, 500 prompts, base), then ``second``: "train" or "sweep"."""
    store = Store(f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"))
    client = MlflowClient(store.tracking_uri)
    exp_id = client.create_experiment("qs", artifact_location=(root / "artifacts").as_uri())
    rng = np.random.default_rng(7)
    parent = _parent(client, exp_id, "sweep-a", root)
    for beta, h in (("0.1", "aaaaaaa1"), ("0.5", "aaaaaaa2")):
        _run(client, exp_id, parent, f"beta{beta}-seed0-{h}", {"method.beta": beta, "train.seed": "0",
             "train.max_steps": "1200", "eval.arith.limit": "500"}, 500, 0.3, rng)
    _run(client, exp_id, parent, "base", {"eval.arith.limit": "500", "train.max_steps": "1200"}, 500, 0.1, rng)
    parent = _parent(client, exp_id, "sweep-b", root)
    if second == "train":  # harness train --set train.max_steps=30 --set eval.arith.limit=50: one trial + base
        _run(client, exp_id, parent, "seed0-bbbbbbb1", {"method.beta": "0.1", "train.seed": "0",
             "train.max_steps": "30", "eval.arith.limit": "50"}, 50, 0.2, rng)
        _run(client, exp_id, parent, "base", {"eval.arith.limit": "50", "train.max_steps": "30"}, 50, 0.1, rng)
    else:  # harness sweep --set train.max_steps=20: both betas again, the same base (evaluated again)
        for beta, h in (("0.1", "ccccccc1"), ("0.5", "ccccccc2")):
            _run(client, exp_id, parent, f"beta{beta}-seed0-{h}", {"method.beta": beta, "train.seed": "0",
                 "train.max_steps": "20", "eval.arith.limit": "500"}, 500, 0.25, rng)
        _run(client, exp_id, parent, "base", {"eval.arith.limit": "500", "train.max_steps": "20"}, 500, 0.1, rng)
    return store


def _report(tmp_path, second):
    out = tmp_path / "out"
    md = write_report(_store(tmp_path, second), ["qs"], out, "csv", log_artifacts=False)
    return md, pd.read_csv(out / "report.csv", dtype={"level": str})


def test_a_train_with_set_is_not_a_second_seed_and_keeps_both_bases(tmp_path):
    md, csv = _report(tmp_path, "train")
    levels = csv[csv["row_type"] == "level"]
    assert levels["n"].max() == 1  # no level pools the 1200-step and the 30-step run
    beta = levels[levels["axis"] == "method.beta"]
    assert set(beta["table"]) == {"qs: method.beta (eval.arith.limit=500, train.max_steps=1200)"}
    vs_base = csv[(csv["axis"] == "run (vs base)") & (csv["row_type"] == "comparison")]
    assert set(vs_base["reference"]) == {"base (eval.arith.limit=500)", "base (eval.arith.limit=50)"}
    for _, c in vs_base.iterrows():  # each run is compared with the base evaluated on its own prompts
        assert c["n"] == (50 if c["level"] == "seed0-bbbbbbb1" else 500)
    assert "seed0-bbbbbbb1" in md and "base (eval.arith.limit=50)" in md


def test_a_sweep_with_set_is_another_table_not_more_seeds(tmp_path):
    _, csv = _report(tmp_path, "sweep")
    levels = csv[(csv["row_type"] == "level") & (csv["axis"] == "method.beta")]
    assert levels["n"].max() == 1
    assert set(levels["table"]) == {"qs: method.beta (train.max_steps=20)", "qs: method.beta (train.max_steps=1200)"}
    # the base was evaluated the same way both times: one base, compared with all four trials on 500 prompts
    vs_base = csv[(csv["axis"] == "run (vs base)") & (csv["row_type"] == "comparison")]
    assert set(vs_base["reference"]) == {"base"} and len(vs_base) == 4 and set(vs_base["n"]) == {500}


def test_where_a_run_was_logged_does_not_split_a_level():
    """Two seeds of one configuration, logged from different results_dir / tracking settings: one level of 2 seeds."""
    import pandas as pd

    from harness.report.frame import config_axes

    trials = pd.DataFrame({"params.method.beta": ["0.1", "0.1"], "params.train.seed": ["0", "1"],
                           "params.results_dir": ["a", "b"], "params.tracking.uri": ["x", "y"],
                           "params.train.max_steps": ["20", "20"]})
    assert config_axes(trials, {"params.method.beta": ["0.1"]}) == {}
    trials.loc[1, "params.train.max_steps"] = "30"
    assert config_axes(trials, {"params.method.beta": ["0.1"]}) == {"params.train.max_steps": ["20", "30"]}


def test_the_seed_copies_of_a_staged_trial_do_not_split_a_level():
    """``seeds`` writes the seed into every stage (params stages.<name>.train.seed): those copies are the
    seed, not configuration, so two seeds of a staged configuration stay one level."""
    import pandas as pd

    from harness.report.frame import config_axes

    trials = pd.DataFrame({"params.stages.dpo.method.beta": ["0.1", "0.1"], "params.train.seed": ["0", "1"],
                           "params.stages.sft.train.seed": ["0", "1"], "params.stages.dpo.train.seed": ["0", "1"],
                           "params.stages.dpo.train.max_steps": ["40", "40"]})
    assert config_axes(trials, {"params.stages.dpo.method.beta": ["0.1"]}) == {}
    trials.loc[1, "params.stages.dpo.train.max_steps"] = "80"
    assert config_axes(trials, {"params.stages.dpo.method.beta": ["0.1"]}) == {
        "params.stages.dpo.train.max_steps": ["40", "80"]}
