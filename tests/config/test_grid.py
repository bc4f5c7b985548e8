"""Trials: the ablate x seeds product, resolved stages, stable ids, stage cache keys, dry-run lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.config.grid import data_uris, dry_run_lines, expand_trials, single_trial, stage_key, sweep_id
from harness.config.spec import load_spec
from harness.errors import SpecError

BASE = {
    "name": "exp",
    "model": "toy://tiny",
    "method": {"name": "dpo"},
    "data": {"train": "toy://arith-pairs"},
}
TWO_STAGES = [
    {"name": "sft", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"}},
    {"name": "dpo", "method": {"name": "dpo"}},
]


def fp(uri: str) -> str:
    return "fp:" + uri


def load(tmp_path: Path, overrides=(), **changes):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**BASE, **changes}, sort_keys=False))
    return load_spec(path, overrides)


def test_product_size_order_and_seeds(tmp_path):
    spec = load(
        tmp_path,
        lora={"rank": 8},
        seeds=[0, 1],
        ablate={"method.beta": [0.1, 0.5], "lora.rank": [8, 16], "train.lr": [1e-6, 1e-5, 1e-4]},
    )
    trials = expand_trials(spec, fp)
    assert len(trials) == 2 * 2 * 3 * 2
    assert [t.name for t in trials[:3]] == [
        "beta0.1-rank8-lr1e-06-seed0",
        "beta0.1-rank8-lr1e-06-seed1",
        "beta0.1-rank8-lr1e-05-seed0",
    ]
    last = trials[-1]
    assert last.overrides == {"method.beta": 0.5, "lora.rank": 16, "train.lr": 1e-4, "seed": 1}
    assert (last.seed, last.spec.train.seed, last.stages[0].train.seed) == (1, 1, 1)
    assert (last.spec.method.beta, last.spec.lora.alpha, last.stages[0].lr) == (0.5, 32, 1e-4)
    assert last.spec.ablate == {} and last.spec.seeds == [1]
    assert [s.name for s in last.stages] == ["main"]
    assert len({t.id for t in trials}) == len(trials)


def test_no_ablation_gives_one_trial_per_seed(tmp_path):
    trials = expand_trials(load(tmp_path), fp)
    assert len(trials) == 1 and re.fullmatch(r"seed0-[0-9a-f]{8}", trials[0].id)
    assert trials[0].overrides == {"seed": 0}


def test_seeds_are_written_into_every_stage(tmp_path):
    stages = [{**TWO_STAGES[0], "train": {"seed": 7}}, TWO_STAGES[1]]
    trials = expand_trials(load(tmp_path, seeds=[3, 4], stages=stages), fp)
    assert [[s.train.seed for s in t.stages] for t in trials] == [[3, 3], [4, 4]]


def test_stage_ablation_touches_only_that_stage(tmp_path):
    spec = load(tmp_path, stages=TWO_STAGES, ablate={"stages.dpo.method.beta": [0.1, 0.5]})
    trials = expand_trials(spec, fp)
    assert [t.name for t in trials] == ["beta0.1-seed0", "beta0.5-seed0"]
    sft, dpo = trials[1].stages
    assert (dpo.method.name, dpo.method.params["beta"], dpo.reduction) == ("dpo", 0.5, "sum")
    assert sft.method.params == trials[0].stages[0].method.params  # the shared SFT prefix is identical
    assert stage_key(trials[0].stages[0], "base", "d") == stage_key(sft, "base", "d")


def test_method_name_ablation_reads_as_the_method(tmp_path):
    trials = expand_trials(load(tmp_path, ablate={"method.name": ["dpo", "ipo"]}), fp)
    assert [t.name for t in trials] == ["dpo-seed0", "ipo-seed0"]
    assert [t.stages[0].reduction for t in trials] == ["sum", "mean"]


def test_mapping_ablation_names_each_entry(tmp_path):
    methods = [{"name": "dpo", "beta": 0.1, "sft_weight": 1.0}, {"name": "simpo", "beta": 2.0}]
    trials = expand_trials(load(tmp_path, ablate={"method": methods}), fp)
    assert [t.name for t in trials] == ["dpo_beta0.1_sft_weight1.0-seed0", "simpo_beta2.0-seed0"]
    assert [t.stages[0].method.params["beta"] for t in trials] == [0.1, 2.0]
    # Logged as one param too, so a report can group by the mapping as one axis.
    from harness.run.sweep import trial_params

    assert [trial_params(t)["method"] for t in trials] == methods
    assert trial_params(trials[1])["method.name"] == "simpo"


def test_a_whole_stage_as_one_axis_compares_methods_that_read_different_data(tmp_path):
    """`ablate: {stages.rl: [...]}`: each value's keys replace the stage's (method and data together);
    the shared SFT prefix stays identical."""
    arms = [{"method": {"name": "dpo"}, "data": {"train": "toy://arith-pairs"}},
            {"method": {"name": "grpo", "reward": {"verifier": "arith"}}, "data": {"train": "toy://arith-prompts"}}]
    stages = [TWO_STAGES[0], {"name": "rl", "method": {"name": "dpo"}, "train": {"lr": 1e-4}}]
    trials = expand_trials(load(tmp_path, stages=stages, ablate={"stages.rl": arms}), fp)
    assert [(t.stages[1].method.name, t.stages[1].data.train) for t in trials] == [
        ("dpo", "toy://arith-pairs"), ("grpo", "toy://arith-prompts")]
    assert [t.stages[1].train.lr for t in trials] == [1e-4, 1e-4]  # a key the value does not name stays
    assert [t.name for t in trials] == ["dpo-seed0", "grpo_verifierarith-seed0"]  # named by the stage's method
    assert stage_key(trials[0].stages[0], "base", "d") == stage_key(trials[1].stages[0], "base", "d")
    with pytest.raises(SpecError, match="a stage is set by a mapping of its keys"):
        load(tmp_path, stages=stages, ablate={"stages.rl": ["grpo"]})
    with pytest.raises(SpecError, match="a stage keeps its name"):
        load(tmp_path, stages=stages, ablate={"stages.rl": [{"name": "other"}]})


def test_an_invalid_combination_names_the_trial(tmp_path):
    """Each value is valid alone (checked at load); the product can still hold an impossible pair."""
    spec = load(
        tmp_path,
        method={"name": "sft"},
        ablate={"method.name": ["sft", "dpo"], "train.packing": [False, True]},
    )
    with pytest.raises(SpecError, match=r"trial dpo-packingtrue-seed0 is invalid:\n.*train.packing"):
        expand_trials(spec, fp)


def test_ids_are_stable_and_follow_data_fingerprints(tmp_path):
    spec = load(tmp_path, stages=TWO_STAGES, ablate={"stages.dpo.method.beta": [0.1, 0.5]})
    ids = [t.id for t in expand_trials(spec, fp)]
    assert ids == [
        t.id
        for t in expand_trials(
            load(tmp_path, stages=TWO_STAGES, ablate={"stages.dpo.method.beta": [0.1, 0.5]}), fp
        )
    ]
    changed = [t.id for t in expand_trials(spec, lambda u: "new" if u == "toy://arith-sft" else fp(u))]
    assert all(a != b and a.split("-")[:2] == b.split("-")[:2] for a, b in zip(ids, changed))
    other_model = [
        t.id
        for t in expand_trials(
            load(
                tmp_path,
                ["model=toy://other"],
                stages=TWO_STAGES,
                ablate={"stages.dpo.method.beta": [0.1, 0.5]},
            ),
            fp,
        )
    ]
    assert set(other_model).isdisjoint(ids)


def test_ids_do_not_depend_on_the_process(tmp_path):
    spec = load(tmp_path, ablate={"method.beta": [0.1, 0.5]})
    code = (
        "from harness.config.spec import load_spec; from harness.config.grid import expand_trials; "
        f"print(' '.join(t.id for t in expand_trials(load_spec({str(tmp_path / 'spec.yaml')!r}), "
        "lambda u: 'fp:' + u)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == [t.id for t in expand_trials(spec, fp)]


def test_data_uris_cover_train_eval_and_suites(tmp_path):
    spec = load(
        tmp_path,
        data={"train": "a.jsonl", "eval": "b.jsonl"},
        eval={"suites": ["arith", "safety"], "safety": {"data": "toy://safety-eval"}},
    )
    stage = single_trial(spec, fp).stages[0]
    assert data_uris(stage) == ["a.jsonl", "b.jsonl", "toy://arith-eval", "toy://safety-eval"]
    assert data_uris(single_trial(load(tmp_path), fp).stages[0]) == ["toy://arith-pairs"]


def test_stage_key_ignores_eval_but_not_training(tmp_path):
    def key(*overrides, model="base", data="d"):
        return stage_key(single_trial(load(tmp_path, overrides), fp).stages[0], model, data)

    base = key()
    assert re.fullmatch(r"[0-9a-f]{16}", base)
    assert key("eval.suites=[arith]", "eval.generation.max_new_tokens=8", "eval.arith.limit=5") == base
    assert key("method.beta=0.2") != base
    assert key("method.logprob_reduction=mean") != base
    assert key("train.seed=1") != base
    assert key("lora.rank=4") != base
    assert key("train.disable_dropout=false") != base
    assert key("ref_model=toy://ref") != base
    assert key(model="other") != base and key(data="other") != base


def test_sweep_id_is_a_hash_of_the_whole_spec(tmp_path):
    spec = load(tmp_path, ablate={"method.beta": [0.1, 0.5]})
    assert re.fullmatch(r"[0-9a-f]{12}", sweep_id(spec))
    assert sweep_id(spec) == sweep_id(load(tmp_path, ablate={"method.beta": [0.1, 0.5]}))
    assert sweep_id(spec) != sweep_id(load(tmp_path, ablate={"method.beta": [0.1, 0.6]}))


def test_single_trial_ignores_ablation(tmp_path):
    trial = single_trial(load(tmp_path, seeds=[5, 6], ablate={"method.beta": [0.3, 0.5]}), fp)
    assert trial.name == "seed5" and trial.spec.method.beta == 0.1 and trial.spec.train.seed == 5


def test_dry_run_lines(tmp_path):
    trials = expand_trials(load(tmp_path, seeds=[0, 1], ablate={"method.beta": [0.1, 0.5]}), fp)
    lines = dry_run_lines(trials)
    assert len(lines) == 5 and lines[-1] == "4 trials"
    assert lines[0] == f"{trials[0].id}  method.beta=0.1 seed=0"
    assert lines[3].startswith("beta0.5-seed1-") and lines[3].endswith("  method.beta=0.5 seed=1")


def test_train_processes_at_its_default_leaves_ids_and_stage_keys_as_they_were(tmp_path):
    """``train.processes`` (added December 2026) at 1 changes no sweep id, trial id or stage key: the
    values below are what this spec gave before the key existed.  At 2 it is part of all three (N
    processes match one only up to float rounding), and it is an ablation axis like any other key."""
    stages = TWO_STAGES
    spec = load(tmp_path, method=None, stages=stages, ablate={"stages.dpo.method.beta": [0.1, 0.5]})
    trials = expand_trials(spec, fp)
    assert sweep_id(spec) == "0066b5308370"
    assert [t.id for t in trials] == ["beta0.1-seed0-c0dcaee0", "beta0.5-seed0-fbdb8c08"]
    assert [stage_key(st, "base", "d") for st in trials[1].stages] == ["4313e86c0f410c4b", "e8756f003d6fd773"]
    two = load(tmp_path, ["train.processes=2"], method=None, stages=stages,
               ablate={"stages.dpo.method.beta": [0.1, 0.5]})
    assert sweep_id(two) != sweep_id(spec)
    assert expand_trials(two, fp)[0].id != trials[0].id
    assert stage_key(expand_trials(two, fp)[1].stages[0], "base", "d") != "4313e86c0f410c4b"
    axis = expand_trials(load(tmp_path, ablate={"train.processes": [1, 2]}), fp)
    assert [t.name for t in axis] == ["processes1-seed0", "processes2-seed0"]
    assert [t.stages[0].train.processes for t in axis] == [1, 2]
