"""The experiment spec: one typed model per YAML block (DESIGN.md, "Contract: spec keys").

Every key has one default, here.  Unknown keys, wrong types and impossible values
are errors that name the file, the line, the dotted key path and the value seen.
Stages inherit the top level by deep merge, done on the raw YAML before
validation, so each validated stage is complete.  The raw mapping (after
``--set`` overrides) is kept on the ``Spec`` so that the grid can apply ablation
values to it and validate again: ``lora.alpha`` and ``train.lr`` re-resolve.
"""

from __future__ import annotations

import copy
import functools
import operator
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from harness.config.problems import Problem, format_problems, pydantic_problems, show
from harness.config.spec_io import (
    apply_overrides,
    parse_override,  # noqa: F401  (re-exported: callers import it from harness.config.spec)
    read_yaml,
    set_key,
)
from harness.config.suite_options import (
    SUITE_OPTIONS,
    AlpacaOptions,
    ArithOptions,
    CodeOptions,
    MTBenchOptions,
    PairwiseOptions,
    SafetyOptions,
    SingleOptions,
    pass_at_k_problems,
)
from harness.errors import SpecError
from harness.methods.registry import METHODS
from judges.verifiers import VERIFIERS

SUITES = tuple(SUITE_OPTIONS)  # every suite's name, in order (the records: harness.eval.suites.SUITES)
STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # no dots: stages are addressed as stages.NAME.KEY

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
UnitFloat = Annotated[float, Field(gt=0, le=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FilterSpec(_Model):
    min_length: NonNegInt | None = None
    max_length: PosInt | None = None
    dedup: Literal["none", "exact", "near"] = "none"
    near_threshold: UnitFloat = 0.8
    drop_identical_pairs: bool = True


class DataSpec(_Model):
    train: str | None = Field(None, description="required, unless every stage sets it")
    eval: str | None = None
    fraction: UnitFloat = 1.0
    seed: int = 0
    max_prompt_length: PosInt | None = Field(None, description="null: half of train.max_length")
    truncation: Literal["keep_end_of_prompt", "drop", "error"] = "keep_end_of_prompt"
    filter: FilterSpec = FilterSpec()


class TrainSpec(_Model):
    lr: PosFloat | None = Field(None, description="null: the method's default_lr (resolved on validation)")
    epochs: PosInt = 1
    max_steps: PosInt | None = None
    batch_size: PosInt = 8
    grad_accum: PosInt = 1
    max_length: Annotated[int, Field(ge=2)] = 512
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    weight_decay: NonNegFloat = 0.0
    max_grad_norm: PosFloat | None = Field(1.0, description="null: no clipping")
    seed: int = 0
    shuffle: bool = True
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    packing: bool = False
    pair_forward: Literal["auto", "shared_prompt", "padded"] = Field(
        "auto", description="auto: shared_prompt where the attention takes a 4D mask (sdpa, eager), else padded")
    gradient_checkpointing: bool = False
    log_every: PosInt = 10
    eval_every: PosInt | None = None
    save: Literal["final", "none"] = "final"
    disable_dropout: bool = Field(True, description="p = 0 in every torch.nn.Dropout of the policy, as TRL")
    processes: PosInt = 1


class LoraSpec(_Model):
    rank: NonNegInt = 0
    alpha: PosFloat | None = Field(None, description="null: 2 x rank (resolved on validation)")
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: str | list[str] = "all-linear"
    quantize: Literal["none", "nf4"] = Field("none", description="nf4: QLoRA (4-bit NF4 base, GPU only)")

    @model_validator(mode="after")
    def _resolve_alpha(self) -> LoraSpec:
        if self.alpha is None:
            self.alpha = float(2 * self.rank)
        return self


class GenerationSpec(_Model):
    max_new_tokens: PosInt = 128
    temperature: NonNegFloat = 0.0
    top_p: UnitFloat = 1.0
    n: PosInt = 1
    seed: int = 0
    system_prompt: str | None = None
    backend: Literal["auto", "transformers", "vllm"] = Field(
        "auto", description="auto: vLLM when installed and CUDA is present, else transformers")


class EvalSpec(_Model):
    suites: list[Literal[SUITES]] = []
    include_base: bool = False
    after: Literal["final", "every_stage"] = "final"
    generation: GenerationSpec = GenerationSpec()
    arith: ArithOptions = ArithOptions()
    pairwise: PairwiseOptions = PairwiseOptions()
    single: SingleOptions = SingleOptions()
    mtbench: MTBenchOptions = MTBenchOptions()
    alpaca: AlpacaOptions = AlpacaOptions()
    safety: SafetyOptions = SafetyOptions()
    code: CodeOptions = CodeOptions()


class JudgeSpec(_Model):
    base_url: str | None = Field(None, description="null: the embedded toy judge")
    model: str | None = None
    backend: Literal["openai", "vllm", "reward_model"] = "openai"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: PosInt = 8
    max_retries: NonNegInt = 4
    timeout_s: PosFloat = 60.0
    temperature: NonNegFloat = 0.0
    allow_toy_judge: bool = Field(False, description="let the embedded toy judge (base_url null) score items "
                                                     "outside the toy world, where it can only tie; for tests")
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.1, description="a suite whose judge requests fail more often than this (or all of them) is an error, "
                         "not a result")


class ReportSpec(_Model):
    primary: list[str] | None = Field(None, description="metrics whose comparisons form the multiplicity "
                                                          "family; null: each suite's headline metric")
    equivalence_margin: dict[str, PosFloat] = Field({}, description="metric -> margin for TOST equivalence")


class TrackingSpec(_Model):
    uri: str | None = Field(None, description="null: sqlite:///<results_dir>/mlflow.db")
    artifact_root: str | None = Field(None, description="null: <results_dir>/artifacts")


class ResourcesSpec(_Model):
    """What one trial asks of the executor; where a sweep runs never changes what it computes
    (left out of the sweep id and the trial ids)."""

    gpus_per_trial: NonNegFloat | None = Field(None, description="null: 1 where CUDA is available, else 0")
    cpus_per_trial: PosFloat = 1.0


# ---- methods: one model per registry entry, typed from its defaults ----

PARAM_TYPES: dict[str, Any] = {
    "logprob_reduction": Literal["sum", "mean"] | None,
    "loss_normalization": Literal["token", "sequence"],
    "assistant_turns": Literal["all", "last"],
    "pooling": Literal["last", "mean"],
    "reward_model": str | None,
    "beta": PosFloat,
    "tau": PosFloat,
    "label_smoothing": Annotated[float, Field(ge=0, lt=0.5)],  # rDPO divides by 1 - 2ε
    "sft_weight": NonNegFloat,
    "desirable_weight": NonNegFloat,
    "undesirable_weight": NonNegFloat,
    "center_rewards_coefficient": NonNegFloat,
    "group_size": Annotated[int, Field(ge=2)],  # a group of one has no relative advantage
    "eps_low": Annotated[float, Field(ge=0, lt=1)],
    "eps_high": NonNegFloat,
    "num_iterations": PosInt,
    "minibatches": PosInt,
    "max_new_tokens": PosInt,
    "temperature": PosFloat,  # rollouts sample; 0 (greedy) would give a group identical answers
    "top_p": UnitFloat,
    "rollout_backend": Literal["auto", "transformers", "vllm"],
    "advantage_norm": Literal["group", "batch", "none"],
    "loss_aggregation": Literal["grpo", "bnpo", "dr_grpo", "dapo"],
    "kl_target": PosFloat | None,  # null: a fixed beta
    "kl_horizon": PosInt,
    "lam": Annotated[float, Field(ge=0, le=1)],
    "cliprange": PosFloat,
    "cliprange_value": PosFloat,
    "vf_coef": NonNegFloat,
    "ent_coef": NonNegFloat,
    "reward_clip": PosFloat | None,  # scores clipped to [-bound, bound]
    "missing_eos_penalty": float | None,  # subtracted from a truncated completion's score
    "ppo_epochs": PosInt,
    "value_model": Literal["separate", "shared_head"],
}
# Where one method's param differs from the shared type: GRPO's and PPO's beta may be 0 (no KL term);
# PPO's gamma is a discount in [0, 1] (SimPO's gamma is a margin).
METHOD_PARAM_TYPES: dict[tuple[str, str], Any] = {("grpo", "beta"): NonNegFloat, ("ppo", "beta"): NonNegFloat,
                                                  ("ppo", "gamma"): Annotated[float, Field(ge=0, le=1)]}


class FormatRewardSpec(_Model):
    """``method.reward.format``: a bonus for a sample whose whole text matches a regular expression, added
    to its verifier's 1/0 score (the format reward of DeepSeek-R1, Guo et al. 2025, summed with accuracy)."""

    pattern: str = Field(description="a Python regular expression the whole sample text must match (re.fullmatch)")
    weight: float = Field(1.0, description="added to the verifier's 1/0 score of a matching sample")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc}): {value!r}") from None
        return value


class RewardSpec(_Model):
    """``method.reward`` of an online method: exactly one reward source."""

    verifier: Literal[tuple(VERIFIERS)] | None = Field(None, description="score each sample by a verifier, 1 or 0")
    model: str | None = Field(None, description="a reward model directory, or the name of an rm stage before this one")
    judge: Literal["pairwise", "single"] | None = Field(None, description="the judge stack (online-dpo)")
    format: FormatRewardSpec | None = Field(None, description="with verifier: a bonus for samples matching a pattern "
                                                             "(null: none)")

    @model_validator(mode="after")
    def _exactly_one(self) -> RewardSpec:
        given = [k for k in ("verifier", "model", "judge") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of verifier, model, judge (value seen: {given or 'none'})")
        if self.format is not None and self.verifier is None:
            raise ValueError("format: a format reward is added to a verifier's score; set verifier too")
        return self


PARAM_TYPES["reward"] = RewardSpec | None


class _MethodBase(_Model):
    @model_validator(mode="after")
    def _resolve_reduction(self) -> _MethodBase:
        if "logprob_reduction" in type(self).model_fields and self.logprob_reduction is None:
            self.logprob_reduction = METHODS[self.name].default_reduction
        return self


def _param_type(method: str, key: str, default: Any) -> Any:
    if (method, key) in METHOD_PARAM_TYPES:
        return METHOD_PARAM_TYPES[method, key]
    if key in PARAM_TYPES:
        return PARAM_TYPES[key]
    return (str | None) if default is None else type(default)


def _method_model(name: str) -> type[BaseModel]:
    fields = {k: (_param_type(name, k, v), v) for k, v in METHODS[name].params.items()}
    title = "Method_" + name.replace("-", "_")
    return create_model(title, __base__=_MethodBase, name=(Literal[name], ...), __module__=__name__, **fields)


METHOD_MODELS = {name: _method_model(name) for name in METHODS}
# Module attributes under their own names, so that a spec pickles (a parallel sweep sends it to its workers).
globals().update({model.__name__: model for model in METHOD_MODELS.values()})
MethodSpec = Annotated[functools.reduce(operator.or_, METHOD_MODELS.values()), Field(discriminator="name")]


def _resolve_lr(train: TrainSpec, method: Any) -> None:
    if train.lr is None and method is not None:
        train.lr = METHODS[method.name].default_lr


class StageConfig(_Model):
    """One stage after inheriting the top level (complete, validated)."""

    name: str
    method: MethodSpec
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()
    lora: LoraSpec = LoraSpec()
    eval: EvalSpec = EvalSpec()
    ref_model: str | None = None

    @model_validator(mode="after")
    def _resolve(self) -> StageConfig:
        _resolve_lr(self.train, self.method)
        return self


class Spec(_Model):
    name: Annotated[str, Field(min_length=1)]
    results_dir: str = "results"
    model: str
    ref_model: str | None = Field(None, description="null: the frozen starting policy")
    data: DataSpec = DataSpec()
    method: MethodSpec | None = None
    train: TrainSpec = TrainSpec()
    lora: LoraSpec = LoraSpec()
    eval: EvalSpec = EvalSpec()
    judge: JudgeSpec = JudgeSpec()
    ablate: dict[str, list[Any]] = {}
    seeds: Annotated[list[int], Field(min_length=1)] = Field([0], description="null/absent: [train.seed]")
    stages: list[StageConfig] | None = None
    tracking: TrackingSpec = TrackingSpec()
    resources: ResourcesSpec = ResourcesSpec()
    report: ReportSpec = ReportSpec()

    _raw: dict = PrivateAttr(default_factory=dict)
    _file: str = PrivateAttr(default="spec")

    @model_validator(mode="after")
    def _resolve(self) -> Spec:
        _resolve_lr(self.train, self.method)
        return self

    def source_dict(self) -> dict:
        """The raw mapping this spec was validated from (YAML plus overrides), a copy."""
        return copy.deepcopy(self._raw)

    @property
    def file(self) -> str:
        return self._file


# ---- method helpers ----


def resolved_method_params(method: Any) -> dict[str, Any]:
    """The method's defaults overlaid with the user's values, without `name`; accepts a model or a dict."""
    values = dict(method) if isinstance(method, dict) else method.model_dump()
    name = values.pop("name")
    params = {**METHODS[name].params, **values}
    if "logprob_reduction" in params:
        params["logprob_reduction"] = effective_reduction({"name": name, **params})
    return params


def effective_lr(spec_or_stage: Any) -> float | None:
    """train.lr, or the method's default learning rate when it is null."""
    lr = spec_or_stage.train.lr
    method = spec_or_stage.method
    return lr if lr is not None or method is None else METHODS[method.name].default_lr


def effective_reduction(method: Any) -> str | None:
    """method.logprob_reduction, or the method's default reduction when it is null.

    Accepts a method model, a dict with `name`, or an object with `name` and a `params` dict.
    """
    if isinstance(method, dict):
        name, value = method["name"], method.get("logprob_reduction")
    else:
        name, params = method.name, getattr(method, "params", None)
        source = params if isinstance(params, dict) else vars(method)
        value = source.get("logprob_reduction")
    return value or METHODS[name].default_reduction


# ---- raw preprocessing: stage inheritance ----


def deep_merge(base: Any, over: Any) -> Any:
    """`over` on top of `base`: mappings merge key by key; anything else is replaced."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return copy.deepcopy(over)
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if key in out else copy.deepcopy(value)
    return out


def _method_name(method: Any) -> Any:
    return method.get("name") if isinstance(method, dict) else None


def _merge_method(top: Any, stage: Any) -> Any:
    """A stage method with another name replaces the top level's, so its params do not leak."""
    top_name, stage_name = _method_name(top), _method_name(stage)
    if top_name is not None and stage_name is not None and top_name != stage_name:
        return copy.deepcopy(stage)
    return deep_merge(top, stage)


def _merge_stage(top: dict, stage: dict) -> dict:
    out = copy.deepcopy(stage)
    for key in ("data", "train", "lora", "eval"):
        if key in top:
            out[key] = deep_merge(top[key], stage[key]) if key in stage else copy.deepcopy(top[key])
    if "method" in top:
        out["method"] = (
            _merge_method(top["method"], stage["method"])
            if "method" in stage
            else copy.deepcopy(top["method"])
        )
    if "ref_model" not in stage and "ref_model" in top:
        out["ref_model"] = top["ref_model"]
    return out


def _prepare(raw: dict) -> dict:
    """The mapping pydantic validates: stages merged over the top level, seeds defaulted."""
    out = dict(raw)
    stages = raw.get("stages")
    if isinstance(stages, list):
        out["stages"] = [_merge_stage(raw, s) if isinstance(s, dict) else s for s in stages]
        if isinstance(raw.get("method"), dict) and _method_name(raw["method"]) is None:
            out.pop("method")  # a nameless top-level method is only a default for the stages
    train = raw.get("train")
    if raw.get("seeds") is None:
        out.pop("seeds", None)
        seed = train.get("seed") if isinstance(train, dict) else None
        if isinstance(seed, int) and not isinstance(seed, bool):
            out["seeds"] = [seed]
    return out


# ---- rules that span several keys ----


def _stage_rules(
    prefix: str, method: Any, data: DataSpec, train: TrainSpec, eval_: EvalSpec
) -> list[Problem]:
    out = []
    if data.train is None:
        out.append(Problem(f"{prefix}data.train", "required (a JSONL/JSON/Parquet path or toy://NAME)"))
    if method is not None and "reward" in METHODS[method.name].params and method.reward is None:
        out.append(Problem(f"{prefix}method.reward", f"required for {method.name} (e.g. {{verifier: arith}}, "
                                                     "{model: RM_DIR_OR_STAGE} or {judge: pairwise})"))
    batch = METHODS[method.name].batch if method is not None else None
    if batch is not None and getattr(method, "reward", None) is not None and method.reward.judge is not None \
            and not batch.paired:
        out.append(Problem(f"{prefix}method.reward.judge", f"a judge compares the two samples of a prompt: "
                                                           f"online-dpo only, not {method.name} (use a verifier or a "
                                                           "reward model)"))
    if batch is not None and batch.online:
        unused = [("data.eval", data.eval is not None), ("data.filter", data.filter != FilterSpec()),
                  ("train.eval_every", train.eval_every is not None)]
        out += [Problem(f"{prefix}{key}", f"not used by online methods ({method.name} trains on its own samples "
                                          "of the prompts); leave it out") for key, given in unused if given]
    if getattr(method, "kl_target", None) is not None and method.beta == 0:
        out.append(Problem(f"{prefix}method.kl_target", f"adapts beta multiplicatively, so method.beta: 0 would "
                                                        f"stay 0; set beta > 0 or kl_target: null (value seen: "
                                                        f"{method.kl_target})"))
    if batch is not None and batch.online and train.processes > 1:
        out.append(Problem(f"{prefix}train.processes", f"several processes train offline methods only in this "
                                                      f"version; {method.name} trains in one (value seen: "
                                                      f"{train.processes})"))
    if train.packing and method is not None and not METHODS[method.name].batch.packable:
        out.append(Problem(f"{prefix}train.packing", f"only SFT-family methods pack (method: {method.name})"))
    if train.pair_forward != "auto" and method is not None and not METHODS[method.name].batch.shared_prompt:
        out.append(Problem(f"{prefix}train.pair_forward", f"only preference-pair methods (dpo, ipo, hinge, robust, "
                                                          f"simpo, orpo) choose a pair layout (method: {method.name}, "
                                                          f"value seen: {train.pair_forward}); leave it out"))
    if data.max_prompt_length is not None and data.max_prompt_length >= train.max_length:
        msg = (
            f"must be less than train.max_length ({train.max_length}) (value seen: {data.max_prompt_length})"
        )
        out.append(Problem(f"{prefix}data.max_prompt_length", msg))
    lo, hi = data.filter.min_length, data.filter.max_length
    if lo is not None and hi is not None and lo > hi:
        out.append(
            Problem(f"{prefix}data.filter.min_length", f"greater than max_length {hi} (value seen: {lo})")
        )
    for suite in SUITES:
        out += [Problem(f"{prefix}{key}", message) for key, message in pass_at_k_problems(suite, getattr(eval_, suite))]
    if len(set(eval_.suites)) != len(eval_.suites):
        out.append(Problem(f"{prefix}eval.suites", f"duplicate suite (value seen: {show(eval_.suites)})"))
    return out


def _stages_rules(stages: list[StageConfig]) -> list[Problem]:
    if not stages:
        return [Problem("stages", "empty list; leave stages out for a single-stage trial")]
    out, seen = [], set()
    for i, st in enumerate(stages):
        if not STAGE_NAME.match(st.name):
            out.append(
                Problem(f"stages[{i}].name", f"use letters, digits, _ and - (value seen: {show(st.name)})")
            )
        elif st.name in seen:
            out.append(Problem(f"stages[{i}].name", f"duplicate stage name (value seen: {show(st.name)})"))
        seen.add(st.name)
        out += _stage_rules(f"stages[{i}].", st.method, st.data, st.train, st.eval)
        out += _lora_rules(f"stages[{i}].", st.method, st.lora)
    return out


def _lora_rules(prefix: str, method: Any, lora: LoraSpec) -> list[Problem]:
    """QLoRA trains an adapter on a 4-bit causal LM: it needs an adapter, and a policy to adapt."""
    if lora.quantize == "none":
        return []
    out = []
    if lora.rank == 0:
        out.append(Problem(f"{prefix}lora.quantize", f"{lora.quantize} (QLoRA) trains a LoRA adapter on a "
                                                     "4-bit base; set lora.rank > 0"))
    if method is not None and METHODS[method.name].batch.scalar_head:
        out.append(Problem(f"{prefix}lora.quantize", f"{lora.quantize} is for causal-LM methods; an "
                                                     f"{method.name} stage trains in full precision"))
    return out


def rule_problems(spec: Spec) -> list[Problem]:
    """Impossible combinations that no single field can see."""
    out = []
    if spec.stages is None:
        if spec.method is None:
            out.append(Problem("method.name", f"required (one of: {', '.join(METHODS)})"))
        out += _stage_rules("", spec.method, spec.data, spec.train, spec.eval)
        out += _lora_rules("", spec.method, spec.lora)
    else:
        out += _stages_rules(spec.stages)
    if spec.judge.backend in ("vllm", "reward_model") and spec.judge.model is None:
        out.append(Problem("judge.model", f"required when judge.backend is {spec.judge.backend}"))
    if spec.judge.backend == "reward_model" and spec.judge.base_url is not None:
        out.append(Problem("judge.base_url", "must be null when judge.backend is reward_model (harness serves "
                                             "the reward model itself)"))
    return out


# ---- validation ----


def _check(raw: Any) -> tuple[Spec | None, list[Problem]]:
    if not isinstance(raw, dict):
        return None, [Problem("(top level)", f"the spec must be a mapping of keys (value seen: {show(raw)})")]
    try:
        spec = Spec.model_validate(_prepare(raw))
    except ValidationError as e:
        return None, pydantic_problems(e, Spec)
    return spec, rule_problems(spec)


def _ablate_problems(spec: Spec, raw: dict) -> list[Problem]:
    """Each ablation value, applied alone, must give a valid spec."""
    base = {**raw, "ablate": {}}
    out = []
    for key, values in spec.ablate.items():
        if not values:
            out.append(Problem(f"ablate.{key}", "empty list of values"))
        if len({show(v) for v in values}) != len(values):
            out.append(Problem(f"ablate.{key}", f"duplicate values (value seen: {show(values)})"))
        for i, value in enumerate(values):
            out += _ablate_value_problems(base, key, i, value)
    return out


def _ablate_value_problems(base: dict, key: str, i: int, value: Any) -> list[Problem]:
    where = f"ablate.{key}[{i}]"
    try:
        trial_raw, path = set_key(base, key, value)
    except SpecError as e:
        return [Problem(where, f"{e} (value seen: {show(value)})")]
    if re.fullmatch(r"(stages\[\d+\]\.)?train\.seed", path):
        return [Problem(where, "the seed axis is `seeds`, not an ablation of train.seed")]
    _, problems = _check(trial_raw)
    return [Problem(where, f"{p.path}: {p.message}") for p in problems]


def validate_spec(
    raw: Any, file: str = "spec", lines: dict[str, int] | None = None, origins: dict[str, str] | None = None
) -> Spec:
    """Validate a raw mapping into a Spec, or raise one SpecError listing every problem."""
    spec, problems = _check(raw)
    if spec is not None and not problems:
        problems = _ablate_problems(spec, raw)
    if problems:
        raise SpecError(format_problems(problems, file, lines or {}, origins or {}))
    spec._raw = copy.deepcopy(raw)
    spec._file = file
    return spec


def load_spec(path: str | Path, overrides: Sequence[str] = (), ablating: bool = True) -> Spec:
    """Read a spec file, apply `--set KEY=VALUE` overrides, validate.

    ``ablating`` False (``harness train``, which ignores ``ablate``) lets a `--set` name an ablated key.
    """
    raw, lines = read_yaml(path)
    origins: dict[str, str] = {}
    if isinstance(raw, dict):
        raw, origins = apply_overrides(raw, overrides, str(path), ablating)
    return validate_spec(raw, str(path), lines, origins)


# ---- serialization ----


def spec_to_dict(spec: Spec) -> dict[str, Any]:
    """The resolved spec as plain JSON-serializable data."""
    return spec.model_dump(mode="json")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys for MLflow params; stages go under their names (stages.dpo.method.beta), lists stay values."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        elif path == "stages" and isinstance(value, list):
            out.update(flatten({s["name"]: s for s in value}, path))
        else:
            out[path] = value
    return out
