"""Trials: the `ablate` x `seeds` grid of a spec, each with resolved stages and a stable id.

A trial id is a readable name (``beta0.1-rank8-seed0``) plus 8 hex of a sha256
over the trial's resolved stages, its starting model, the judge settings that
change verdicts, and the fingerprints of every data uri it reads.  Hashes use
canonical JSON (sorted keys, repr floats), never Python's ``hash()``, so ids are
the same in every process.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from harness.cache import digest
from harness.config.spec import (
    DataSpec,
    EvalSpec,
    LoraSpec,
    Spec,
    TrainSpec,
    effective_lr,
    effective_reduction,
    resolved_method_params,
    set_key,
    validate_spec,
)
from harness.errors import SpecError
from harness.methods.registry import METHODS, MethodEntry

# Judge settings that change verdicts; concurrency, retries and timeouts do not.
JUDGE_KEYS = ("base_url", "model", "backend", "temperature")


@dataclass(frozen=True)
class ResolvedMethod:
    name: str
    params: dict[str, Any]  # every parameter of the method, defaults applied, reduction resolved

    @property
    def entry(self) -> MethodEntry:
        return METHODS[self.name]


@dataclass(frozen=True)
class StageSpec:
    """One stage of a trial, fully resolved (lr, lora.alpha and logprob_reduction included)."""

    name: str
    method: ResolvedMethod
    data: DataSpec
    train: TrainSpec
    lora: LoraSpec
    eval: EvalSpec
    ref_model: str | None

    @property
    def lr(self) -> float:
        return effective_lr(self)

    @property
    def reduction(self) -> str | None:
        return effective_reduction(self.method)

    def to_dict(self, include_eval: bool = True) -> dict[str, Any]:
        out = {
            "name": self.name,
            "method": {"name": self.method.name, **self.method.params},
            "data": self.data.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
            "lora": self.lora.model_dump(mode="json"),
            "ref_model": self.ref_model,
        }
        if include_eval:
            out["eval"] = self.eval.model_dump(mode="json")
        return out


@dataclass(frozen=True)
class Trial:
    id: str
    name: str
    overrides: dict[str, Any]  # ablate key -> value of this trial, plus "seed"
    seed: int
    spec: Spec  # ablate values applied, train.seed set, ablate {}, seeds [seed]
    stages: list[StageSpec]


def resolve_stages(spec: Spec) -> list[StageSpec]:
    """The spec's stages, or one stage named "main" built from the top level."""
    sources = spec.stages if spec.stages is not None else [spec]
    names = [s.name for s in spec.stages] if spec.stages is not None else ["main"]
    stages = []
    for name, src in zip(names, sources):
        method = ResolvedMethod(src.method.name, resolved_method_params(src.method))
        stages.append(StageSpec(name, method, src.data, src.train, src.lora, src.eval, src.ref_model))
    return stages


def data_uris(stage: StageSpec) -> list[str]:
    """Every data uri a stage reads: train, held-out eval, and the data of its eval suites."""
    uris = [stage.data.train, stage.data.eval]
    for suite in stage.eval.suites:
        options = getattr(stage.eval, suite)
        data = options.data if isinstance(options, BaseModel) else (options or {}).get("data")
        uris.append(data if isinstance(data, str) else None)
    return [u for u in uris if u is not None]


def sweep_id(spec: Spec) -> str:
    """12 hex of the sha256 of the whole resolved spec.

    Left out: a default ``report`` section and the later train keys at their defaults
    (``without_later_defaults``), so that keys added in December 2026 did not change the ids of
    existing sweeps; and ``resources`` always, since where a sweep runs does not change what it
    computes (a sweep moved to a cluster resumes the same runs)."""
    dumped = spec.model_dump(mode="json")
    del dumped["resources"]
    if dumped.get("report") == type(spec.report)().model_dump(mode="json"):
        del dumped["report"]
    without_later_defaults(dumped)
    for stage in dumped.get("stages") or []:
        without_later_defaults(stage)
    return digest(dumped, 12)


# Keys added after ids were first written, with the default that reproduces the earlier runs' meaning; at that
# default a key changes no id or cache key, so existing sweeps keep their runs and cached stages.
LATER_DEFAULTS = {
    "train.processes": 1,  # N > 1 gives the one-process update up to float rounding, not bit for bit
    "train.pair_forward": "auto",  # shared_prompt (auto's choice under sdpa/eager) equals padded up to float rounding
    "method.reward.format": None,  # no format reward: the verifier's score alone
    # online stages sampled with transformers before; a stage key sees it resolved
    # (harness.train.vllm_rollouts.rollouts_keyed), so auto on a machine without vLLM keys as before
    "method.rollout_backend": "transformers",
}


def without_later_defaults(config: dict) -> dict:
    """``config`` (a spec or stage mapping) without the ``LATER_DEFAULTS`` keys at their default, in place.

    Ids and cache keys hash configs; a key added in December 2026 at its default changes none of them.
    Set to another value it is part of them, so that it can be an ablation axis.
    """
    for dotted, default in LATER_DEFAULTS.items():
        *parents, last = dotted.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node and node[last] == default:
            del node[last]
    return config


def stage_key(stage: StageSpec, input_model_key: str, data_fingerprint: str) -> str:
    """16 hex naming a stage's trained output: its training config (no eval, no name), input and data."""
    config = without_later_defaults(stage.to_dict(include_eval=False))
    del config["name"]  # two identical stages under different names train the same weights
    return digest({"stage": config, "input": input_model_key, "data": data_fingerprint}, 16)


def _format(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _label(key: str, value: Any) -> str:
    last = key.split(".")[-1]
    if isinstance(value, dict) and isinstance(value.get("method"), dict):  # a whole stage: named by its method
        return _label("method", value["method"])
    if isinstance(value, dict):  # method={name: dpo, beta: 0.5} -> "dpo_beta0.5"
        text = "_".join(_label(k, v) for k, v in value.items())
    else:
        text = _format(value) if last == "name" else last + _format(value)  # method.name=dpo -> "dpo"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def trial_name(overrides: dict[str, Any]) -> str:
    """`beta0.1-rank8-seed0` from the last key component and value of each override."""
    return "-".join(_label(k, v) for k, v in overrides.items())


def _write_seed(raw: dict, seed: int, everywhere: bool) -> dict:
    raw = {**raw, "train": {**(raw.get("train") or {}), "seed": seed}}
    if everywhere:
        raw["seeds"] = [seed]
        if isinstance(raw.get("stages"), list):
            raw["stages"] = [{**s, "train": {**(s.get("train") or {}), "seed": seed}} for s in raw["stages"]]
    return raw


def _trial_spec(spec: Spec, combo: tuple[tuple[str, Any], ...], seed: int, name: str) -> Spec:
    raw = spec.source_dict()
    explicit_seeds = raw.get("seeds") is not None
    raw["ablate"] = {}
    for key, value in combo:
        raw, _ = set_key(raw, key, value)
    raw = _write_seed(raw, seed, everywhere=explicit_seeds)
    try:
        return validate_spec(raw, spec.file)
    except SpecError as e:
        raise SpecError(f"{spec.file}: trial {name} is invalid:\n{e}") from None


def _trial_id(name: str, spec: Spec, stages: list[StageSpec], fingerprint: Callable[[str], str]) -> str:
    uris = sorted({u for st in stages for u in data_uris(st)})
    payload = {
        "model": spec.model,
        "stages": [without_later_defaults(st.to_dict()) for st in stages],
        "judge": {k: getattr(spec.judge, k) for k in JUDGE_KEYS},
        "data": {u: fingerprint(u) for u in uris},
    }
    return f"{name}-{digest(payload, 8)}"


def make_trial(
    spec: Spec, combo: tuple[tuple[str, Any], ...], seed: int, fingerprint: Callable[[str], str]
) -> Trial:
    """One trial: the ablation values in `combo` (key, value pairs) with `seed`."""
    overrides = {**dict(combo), "seed": seed}
    name = trial_name(overrides)
    trial_spec = _trial_spec(spec, combo, seed, name)
    stages = resolve_stages(trial_spec)
    return Trial(_trial_id(name, trial_spec, stages, fingerprint), name, overrides, seed, trial_spec, stages)


def _memo(fingerprint: Callable[[str], str]) -> Callable[[str], str]:
    seen: dict[str, str] = {}
    return lambda uri: seen[uri] if uri in seen else seen.setdefault(uri, fingerprint(uri))


def expand_trials(spec: Spec, fingerprint: Callable[[str], str]) -> list[Trial]:
    """ablate (keys in YAML order, values in list order) x seeds, seeds varying fastest."""
    fingerprint = _memo(fingerprint)
    axes = [[(key, value) for value in values] for key, values in spec.ablate.items()]
    trials = [
        make_trial(spec, combo, seed, fingerprint)
        for combo in itertools.product(*axes)
        for seed in spec.seeds
    ]
    ids = [t.id for t in trials]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise SpecError(f"{spec.file}: ablate: several trials resolve to the same id: {', '.join(dupes)}")
    return trials


def single_trial(spec: Spec, fingerprint: Callable[[str], str]) -> Trial:
    """The one trial of `harness train`: no ablation, the first seed."""
    return make_trial(spec, (), spec.seeds[0], fingerprint)


def dry_run_lines(trials: list[Trial]) -> list[str]:
    """`ID  key=value ...` per trial, then `N trials`."""
    lines = [f"{t.id}  " + " ".join(f"{k}={_format(v)}" for k, v in t.overrides.items()) for t in trials]
    return [*lines, f"{len(trials)} trials"]
