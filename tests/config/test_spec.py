"""The spec contract: defaults, errors that name file/line/key/value, overrides, stage inheritance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.config.spec import (
    effective_lr,
    effective_reduction,
    flatten,
    load_spec,
    parse_override,
    resolved_method_params,
    spec_to_dict,
)
from harness.errors import SpecError

MINIMAL = {
    "name": "exp",
    "model": "toy://tiny",
    "method": {"name": "dpo"},
    "data": {"train": "toy://arith-pairs"},
}


def write(tmp_path: Path, spec: dict | str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
    return path


def load(tmp_path: Path, overrides=(), **changes):
    return load_spec(write(tmp_path, {**MINIMAL, **changes}), overrides)


def error_of(tmp_path: Path, overrides=(), **changes) -> str:
    with pytest.raises(SpecError) as info:
        load(tmp_path, overrides, **changes)
    return str(info.value)


# ---------------------------------------------------------------- defaults

DESIGN_DEFAULTS = {
    "results_dir": "results",
    "ref_model": None,
    "data.eval": None,
    "data.fraction": 1.0,
    "data.seed": 0,
    "data.max_prompt_length": None,
    "data.truncation": "keep_end_of_prompt",
    "data.filter.min_length": None,
    "data.filter.max_length": None,
    "data.filter.dedup": "none",
    "data.filter.near_threshold": 0.8,
    "data.filter.drop_identical_pairs": True,
    "method.beta": 0.1,
    "method.label_smoothing": 0.0,
    "method.sft_weight": 0.0,
    "train.epochs": 1,
    "train.max_steps": None,
    "train.batch_size": 8,
    "train.grad_accum": 1,
    "train.max_length": 512,
    "train.scheduler": "cosine",
    "train.warmup_ratio": 0.1,
    "train.weight_decay": 0.0,
    "train.max_grad_norm": 1.0,
    "train.seed": 0,
    "train.shuffle": True,
    "train.precision": "auto",
    "train.packing": False,
    "train.pair_forward": "auto",
    "train.gradient_checkpointing": False,
    "train.log_every": 10,
    "train.eval_every": None,
    "train.save": "final",
    "lora.rank": 0,
    "lora.alpha": 0,
    "lora.dropout": 0.0,
    "lora.target_modules": "all-linear",
    "lora.quantize": "none",
    "eval.suites": [],
    "eval.include_base": False,
    "eval.after": "final",
    "eval.generation.max_new_tokens": 128,
    "eval.generation.temperature": 0.0,
    "eval.generation.top_p": 1.0,
    "eval.generation.n": 1,
    "eval.generation.seed": 0,
    "eval.generation.system_prompt": None,
    "eval.generation.backend": "auto",
    "eval.arith.data": "toy://arith-eval",
    "eval.arith.limit": 200,
    "eval.arith.n": 1,
    "eval.arith.k": [1],
    "judge.base_url": None,
    "judge.model": None,
    "judge.backend": "openai",
    "judge.api_key_env": "OPENAI_API_KEY",
    "judge.concurrency": 8,
    "judge.max_retries": 4,
    "judge.timeout_s": 60,
    "judge.temperature": 0.0,
    "seeds": [0],
    "stages": None,
    "tracking.uri": None,
    "tracking.artifact_root": None,
}


def test_defaults_match_the_design_table(tmp_path):
    flat = flatten(spec_to_dict(load(tmp_path)))
    assert {k: flat[k] for k in DESIGN_DEFAULTS} == DESIGN_DEFAULTS
    assert flat["ablate"] == {} or "ablate" not in flat
    json.dumps(spec_to_dict(load(tmp_path)))  # plain data


def test_method_defaults_are_resolved(tmp_path):
    spec = load(tmp_path)
    assert spec.train.lr == 1e-6 and effective_lr(spec) == 1e-6  # preference family, as TRL
    assert spec.method.logprob_reduction == "sum"
    assert load(tmp_path, method={"name": "ipo"}).method.logprob_reduction == "mean"
    sft = load(tmp_path, method={"name": "sft"})
    assert sft.train.lr == 2e-5 and effective_reduction(sft.method) is None
    assert load(tmp_path, method={"name": "rm"}).train.lr == 1e-5
    assert load(tmp_path, train={"lr": 3e-4}).train.lr == 3e-4
    assert resolved_method_params({"name": "iw-sft", "tau": 2.0}) == {
        "loss_normalization": "token",
        "train_on_prompt": False,
        "assistant_turns": "all",
        "weight_field": "weight",
        "tau": 2.0,
        "reward_model": None,
    }


def test_lora_alpha_defaults_to_twice_the_rank(tmp_path):
    assert load(tmp_path, lora={"rank": 8}).lora.alpha == 16
    assert load(tmp_path, lora={"rank": 8, "alpha": 4}).lora.alpha == 4


def test_seeds_default_to_train_seed(tmp_path):
    assert load(tmp_path, train={"seed": 5}).seeds == [5]
    assert load(tmp_path, train={"seed": 5}, seeds=[1, 2]).seeds == [1, 2]


# ---------------------------------------------------------------- errors name file, line, key, value


def test_unknown_key_names_file_line_path_value_and_suggests(tmp_path):
    text = "name: exp\nmodel: toy://tiny\nmethod: {name: dpo}\ndata: {train: x}\ntrain:\n  batch_sise: 8\n"
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    msg = str(info.value)
    assert f"{tmp_path / 'spec.yaml'}:6: train.batch_sise: unknown key (value seen: 8)" in msg
    assert "did you mean train.batch_size?" in msg


def test_wrong_types_are_errors_with_path_and_value(tmp_path):
    msg = error_of(tmp_path, train={"batch_size": "8", "lr": "fast"}, seeds=[0, "one"])
    assert 'train.batch_size: input should be a valid integer (value seen: "8")' in msg
    assert "train.lr:" in msg and '"fast"' in msg
    assert "seeds[1]:" in msg and '"one"' in msg
    assert len(msg.splitlines()) == 3  # one problem per line
    assert load(tmp_path, train={"weight_decay": 0}).train.weight_decay == 0  # int where float is fine
    assert "train.shuffle" in error_of(tmp_path, train={"shuffle": "yes"})


def test_parameter_of_another_method_is_an_error(tmp_path):
    msg = error_of(tmp_path, method={"name": "dpo", "gamma": 0.5})
    assert "method.gamma: not a parameter of method 'dpo' (its parameters: beta, " in msg
    assert "(value seen: 0.5)" in msg
    assert load(tmp_path, method={"name": "simpo", "gamma": 0.5}).method.gamma == 0.5


def test_method_param_types_follow_their_defaults(tmp_path):
    assert "method.logprob_reduction" in error_of(
        tmp_path, method={"name": "dpo", "logprob_reduction": "max"}
    )
    assert "method.loss_normalization" in error_of(
        tmp_path, method={"name": "sft", "loss_normalization": "x"}
    )
    assert "method.pooling" in error_of(tmp_path, method={"name": "rm", "pooling": "first"})
    assert "method.beta" in error_of(tmp_path, method={"name": "dpo", "beta": -1})
    spec = load(tmp_path, method={"name": "iw-sft", "reward_model": "toy://rm"})
    assert spec.method.reward_model == "toy://rm"


def test_unknown_or_missing_method_name(tmp_path):
    assert 'method.name: unknown method (value seen: "dpoo"); did you mean dpo?' in error_of(
        tmp_path, method={"name": "dpoo"}
    )
    assert "method.name: required" in error_of(tmp_path, method={"beta": 0.1})
    spec = {k: v for k, v in MINIMAL.items() if k != "method"}
    with pytest.raises(SpecError, match="method.name: required"):
        load_spec(write(tmp_path, spec))


@pytest.mark.parametrize(
    "changes, path",
    [
        ({"data": {"train": "x", "fraction": 0}}, "data.fraction"),
        ({"data": {"train": "x", "fraction": 1.5}}, "data.fraction"),
        ({"data": {"train": "x", "truncation": "cut"}}, "data.truncation"),
        ({"data": {"train": "x", "filter": {"dedup": "fuzzy"}}}, "data.filter.dedup"),
        ({"data": {"fraction": 0.5}}, "data.train"),
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"train": {"grad_accum": 0}}, "train.grad_accum"),
        ({"train": {"max_length": 1}}, "train.max_length"),
        ({"train": {"scheduler": "step"}}, "train.scheduler"),
        ({"train": {"precision": "fp8"}}, "train.precision"),
        ({"train": {"save": "best"}}, "train.save"),
        ({"train": {"packing": True}}, "train.packing"),  # dpo is not an SFT method
        ({"train": {"pair_forward": "shared"}}, "train.pair_forward"),
        ({"lora": {"rank": -1}}, "lora.rank"),
        ({"eval": {"after": "never"}}, "eval.after"),
        ({"eval": {"suites": ["arith", "vibes"]}}, "eval.suites[1]"),
        ({"eval": {"arith": {"n": 2, "k": [1, 4]}}}, "eval.arith.k[1]"),
        ({"eval": {"arith": {"k": [0]}}}, "eval.arith.k[0]"),
        ({"judge": {"backend": "tgi"}}, "judge.backend"),
        ({"seeds": []}, "seeds"),
        ({"stages": []}, "stages"),
    ],
)
def test_impossible_values_are_errors(tmp_path, changes, path):
    assert f": {path}: " in error_of(tmp_path, **changes)


def test_packing_is_fine_for_sft(tmp_path):
    assert load(tmp_path, method={"name": "sft"}, train={"packing": True}).train.packing


def test_pair_forward_is_for_preference_pairs(tmp_path):
    assert load(tmp_path, train={"pair_forward": "padded"}).train.pair_forward == "padded"  # dpo
    for method in ("sft", "rm", "kto"):
        assert ": train.pair_forward: only preference-pair methods" in error_of(
            tmp_path, method={"name": method}, train={"pair_forward": "shared_prompt"})


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "name: exp\nmodel: toy://tiny\ntrain:\n  lr: [1e-5\n  seed: 0\n")
    with pytest.raises(SpecError, match=r"spec\.yaml:\d+:\d+: YAML syntax error"):
        load_spec(path)
    dup = write(tmp_path, "name: exp\nname: other\n", "dup.yaml")
    with pytest.raises(SpecError, match=r"dup\.yaml:2: name: duplicate key"):
        load_spec(dup)


def test_scientific_notation_without_a_dot_is_a_float(tmp_path):
    path = write(
        tmp_path, "name: exp\nmodel: toy://tiny\nmethod: {name: dpo}\ndata: {train: x}\ntrain: {lr: 1e-5}\n"
    )
    assert load_spec(path).train.lr == 1e-5


# ---------------------------------------------------------------- --set overrides


def test_parse_override_reads_yaml_values():
    assert parse_override("method.beta=0.1") == ("method.beta", 0.1)
    assert parse_override("eval.arith.k=[1, 4]") == ("eval.arith.k", [1, 4])
    assert parse_override("ref_model=null") == ("ref_model", None)
    assert parse_override("train.lr=1e-5") == ("train.lr", 1e-5)
    with pytest.raises(SpecError, match="KEY=VALUE"):
        parse_override("method.beta")


def test_overrides_are_type_checked_and_named(tmp_path):
    spec = load(tmp_path, ["method.beta=0.3", "lora.rank=4", "data.filter.dedup=exact"])
    assert (spec.method.beta, spec.lora.rank, spec.lora.alpha, spec.data.filter.dedup) == (0.3, 4, 8, "exact")
    msg = error_of(tmp_path, ["train.batch_size=eight"])
    assert "train.batch_size:" in msg and '"eight"' in msg and "(from --set train.batch_size=eight)" in msg
    msg = error_of(tmp_path, ["train.batch_sise=8"])
    assert "train.batch_sise: unknown key" in msg and "(from --set train.batch_sise=8)" in msg
    assert "--set method.beta.x=1" in error_of(tmp_path, ["method.beta=0.2", "method.beta.x=1"])


def test_overrides_address_stages_by_name(tmp_path):
    stages = [{"name": "sft", "method": {"name": "sft"}}, {"name": "dpo", "method": {"name": "dpo"}}]
    spec = load(tmp_path, ["stages.dpo.method.beta=0.5", "stages.sft.train.lr=1e-4"], stages=stages)
    assert spec.stages[1].method.beta == 0.5 and spec.stages[0].train.lr == 1e-4
    assert "no stage named 'ppo' (stages: sft, dpo)" in error_of(
        tmp_path, ["stages.ppo.train.lr=1"], stages=stages
    )
    msg = error_of(tmp_path, ["stages.sft.method.beta=0.5"], stages=stages)
    assert "stages[0].method.beta: not a parameter of method 'sft'" in msg and "(from --set" in msg


# ---------------------------------------------------------------- stages


def test_stages_deep_merge_the_top_level(tmp_path):
    spec = load(
        tmp_path,
        train={"batch_size": 4, "max_length": 64},
        lora={"rank": 8},
        stages=[
            {
                "name": "sft",
                "method": {"name": "sft"},
                "data": {"train": "toy://arith-sft"},
                "train": {"max_steps": 3},
            },
            {"name": "dpo", "method": {"beta": 0.5}, "lora": {"rank": 4}},
        ],
    )
    sft, dpo = spec.stages
    assert (sft.train.batch_size, sft.train.max_length, sft.train.max_steps) == (4, 64, 3)
    assert sft.data.train == "toy://arith-sft" and sft.train.lr == 2e-5 and sft.lora.alpha == 16
    assert (dpo.method.name, dpo.method.beta, dpo.data.train) == ("dpo", 0.5, "toy://arith-pairs")
    assert dpo.train.max_steps is None and dpo.train.lr == 1e-6 and dpo.lora.alpha == 8


def test_a_stage_with_another_method_replaces_it(tmp_path):
    spec = load(
        tmp_path,
        method={"name": "sft", "loss_normalization": "sequence"},
        stages=[{"name": "a"}, {"name": "b", "method": {"name": "dpo"}}],
    )
    assert spec.stages[0].method.loss_normalization == "sequence"
    assert spec.stages[1].method.name == "dpo"  # sft's params did not leak into dpo


def test_a_nameless_top_level_method_is_a_default(tmp_path):
    spec = load(
        tmp_path,
        method={"sft_weight": 0.2},
        stages=[{"name": "a", "method": {"name": "dpo"}}, {"name": "b", "method": {"name": "ipo"}}],
    )
    assert spec.method is None and [s.method.sft_weight for s in spec.stages] == [0.2, 0.2]


def test_each_stage_needs_a_method_and_training_data(tmp_path):
    spec = {
        "name": "exp",
        "model": "toy://tiny",
        "stages": [
            {"name": "sft", "method": {"name": "sft"}, "data": {"train": "x"}},
            {"name": "dpo", "data": {"fraction": 0.5}},
        ],
    }
    msg = str(pytest.raises(SpecError, load_spec, write(tmp_path, spec)).value)
    assert "stages[1].method.name: required" in msg
    spec["stages"][1]["method"] = {"name": "dpo"}
    msg = str(pytest.raises(SpecError, load_spec, write(tmp_path, spec)).value)
    assert "stages[1].data.train: required" in msg


def test_stage_names_are_unique_and_file_safe(tmp_path):
    same = [{"name": "a"}, {"name": "a"}]
    assert 'stages[1].name: duplicate stage name (value seen: "a")' in error_of(tmp_path, stages=same)
    assert "stages[0].name: use letters" in error_of(tmp_path, stages=[{"name": "sft/v1.5"}])


def test_a_top_level_problem_is_reported_once(tmp_path):
    msg = error_of(tmp_path, train={"batch_sise": 8}, stages=[{"name": "a"}, {"name": "b"}])
    assert msg.count("batch_sise") == 1 and len(msg.splitlines()) == 1  # not once more per stage


def test_flatten_puts_stages_under_their_names(tmp_path):
    spec = load(tmp_path, stages=[{"name": "sft", "method": {"name": "sft"}}, {"name": "dpo"}])
    flat = flatten(spec_to_dict(spec))
    assert flat["stages.dpo.method.beta"] == 0.1 and flat["stages.sft.train.lr"] == 2e-5
    assert flat["eval.suites"] == [] and flat["method.name"] == "dpo"


# ---------------------------------------------------------------- ablate


def test_each_ablation_value_is_validated(tmp_path):
    msg = error_of(tmp_path, ablate={"method.beta": [0.1, "high"]})
    assert "ablate.method.beta[1]: method.beta:" in msg and '"high"' in msg
    assert "ablate.lora.rnak[0]: lora.rnak: unknown key" in error_of(tmp_path, ablate={"lora.rnak": [4]})
    assert "ablate.train.seed[0]" in error_of(tmp_path, ablate={"train.seed": [1]})
    assert "ablate.method.beta: duplicate values" in error_of(tmp_path, ablate={"method.beta": [0.1, 0.1]})
    assert "ablate.method.beta: input should be a valid list" in error_of(
        tmp_path, ablate={"method.beta": 0.1}
    )


STAGED = {"name": "abl", "model": "toy://micro",
          "stages": [{"name": "sft", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"}},
                     {"name": "dpo", "method": {"name": "dpo", "beta": 0.1}, "data": {"train": "toy://arith-pairs"}}],
          "ablate": {"stages.dpo.method.beta": [0.1, 0.5]}}


@pytest.mark.parametrize("override", ["stages.dpo.method.beta=0.2", "stages.dpo.method={name: dpo, beta: 0.2}"])
def test_set_of_an_ablated_key_names_both_places(tmp_path, override):
    """The ablation would set the key in every trial: the --set must not vanish silently."""
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, STAGED), [override])
    message = str(err.value)
    assert f"--set {override}" in message and "ablate.stages.dpo.method.beta" in message


def test_set_of_the_axis_itself_or_another_key_is_fine(tmp_path):
    spec = load_spec(write(tmp_path, STAGED), ["ablate.stages.dpo.method.beta=[0.2]", "stages.sft.train.lr=1e-4"])
    assert spec.ablate == {"stages.dpo.method.beta": [0.2]} and spec.stages[0].train.lr == 1e-4
