"""Every spec key with its type, default and meaning, generated from the spec's own models.

``python -m harness.config.keys > docs/spec-keys.md`` writes the reference; a test
(tests/config/test_keys.py) regenerates it and fails when the file is stale, so the
documentation cannot drift from the code.  Method parameters get one table per method
(``harness.methods.registry.METHODS``).
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from harness.config.spec import METHOD_MODELS, Spec

# What each key means, where the field's own description does not say (a test requires one for every key).
NOTES = {
    "name": "the experiment: the MLflow experiment name and the report's name",
    "results_dir": "where the MLflow store, artifacts, caches and reports go",
    "model": "the starting policy: `toy://NAME`, a local HF directory or a hub id",
    "method": "the training method: `method.name` and its parameters (tables below)",
    "stages": "optional list of stages (`name`, `method`, `data`, `train`, `lora`, `eval`, `ref_model`); each "
              "inherits the top level by deep merge",
    "ablate": "`{dotted key: [values]}`: one trial per combination, crossed with `seeds`",
    "eval.suites": "suites to run after training, in order",
    "seeds": "one trial per seed for every ablation combination (sets `train.seed`)",
    "data.eval": "held-out rows of the same kind: validation loss and metrics (`val/*`)",
    "data.fraction": "train on this fraction of `data.train`, a seeded subset (`data.seed`) taken before filtering",
    "data.seed": "the seed of the `data.fraction` subset",
    "data.truncation": "what to do with rows over `train.max_length`: cut the prompt's start, drop the row, or "
                       "stop with an error (counted in `data/truncated`, `data/dropped`)",
    "data.filter.min_length": "drop examples with fewer tokens (counted)",
    "data.filter.max_length": "drop examples with more tokens (counted)",
    "data.filter.dedup": "drop exact or near-duplicate rows (counted)",
    "data.filter.near_threshold": "word-trigram Jaccard at or above which two rows are near duplicates",
    "data.filter.drop_identical_pairs": "drop pairs whose chosen and rejected are identical (counted)",
    "train.epochs": "passes over the training data (unless `max_steps` stops first)",
    "train.max_steps": "stop after this many optimizer steps",
    "train.batch_size": "examples per micro-batch in each process (pairs for preference methods)",
    "train.grad_accum": "micro-batches per optimizer step; the loss is normalized over the whole step",
    "train.max_length": "maximum tokens of prompt + response",
    "train.scheduler": "learning-rate schedule after warmup",
    "train.warmup_ratio": "fraction of the optimizer steps spent warming up linearly",
    "train.weight_decay": "AdamW weight decay",
    "train.seed": "the seed of shuffling, initialization (LoRA adapters, scalar heads) and sampling",
    "train.shuffle": "shuffle the examples each epoch",
    "train.precision": "auto: fp32 on CPU, bf16 autocast on GPU (fp32 master weights); bf16 and fp16 need a GPU",
    "train.packing": "SFT only: pack examples into rows of `max_length` tokens (per-example losses unchanged)",
    "train.pair_forward": "preference pairs (dpo, ipo, hinge, robust, simpo, orpo): shared_prompt runs each pair as one "
                          "row segment `[prompt, chosen, rejected]` (prompt computed once, rows packed, no padding; "
                          "sdpa or eager attention); padded runs `[chosen; rejected]` padded rows; auto: "
                          "shared_prompt where the attention takes a 4D mask, else padded; equal log-probs",
    "train.gradient_checkpointing": "recompute activations in the backward pass (less memory, more time)",
    "train.log_every": "log training metrics every N optimizer steps (and at the first and last)",
    "train.eval_every": "compute `val/*` metrics on `data.eval` every N steps (and at the end)",
    "train.processes": "processes that train one stage together (offline methods; gloo on CPU, NCCL on GPU, one "
                       "GPU each): each takes `batch_size` examples of every micro-batch, so the effective batch "
                       "is batch_size x grad_accum x processes",
    "train.save": "final: save and cache the stage's checkpoint; none: keep no checkpoint",
    "lora.rank": "LoRA rank; 0 trains every weight",
    "lora.dropout": "dropout on the LoRA adapter's input",
    "lora.target_modules": "the modules that get adapters (peft's names; all-linear for every linear layer)",
    "resources.cpus_per_trial": "CPUs a trial asks of the executor (a Ray task's num_cpus; with the local "
                                "executor the worker's thread count)",
    "eval.include_base": "also evaluate the starting model, as trial `base`",
    "eval.after": "evaluate after the final stage only, or after every stage",
    "eval.generation.max_new_tokens": "tokens generated per answer at most",
    "eval.generation.temperature": "sampling temperature; 0 is greedy",
    "eval.generation.top_p": "nucleus sampling mass",
    "eval.generation.n": "samples per prompt",
    "eval.generation.seed": "the sampling seed",
    "eval.generation.system_prompt": "a system message put before every eval prompt",
    "judge.model": "the judge's model name (required for the vllm and reward_model backends)",
    "judge.backend": "openai: any OpenAI-compatible endpoint; vllm: harness starts `vllm serve judge.model`; "
                     "reward_model: harness serves the reward model at judge.model",
    "judge.api_key_env": "the environment variable that holds the judge's API key (its value is never logged)",
    "judge.concurrency": "judge requests in flight at once",
    "judge.max_retries": "retries of a failed judge request (with backoff)",
    "judge.timeout_s": "seconds before one judge request times out",
    "judge.temperature": "the judge's sampling temperature",
}
# Suite options share these meanings (``eval.<suite>.<option>``).
SUITE_NOTES = {
    "data": "the suite's prompts: a file or a toy dataset",
    "limit": "the first N prompts of `data` (the run prints what a limit cuts); null: all",
    "temperature": "this suite's temperature (null: eval.generation's)",
    "top_p": "this suite's top_p (null: eval.generation's)",
    "max_new_tokens": "this suite's max_new_tokens (null: eval.generation's)",
    "seed": "this suite's sampling seed (null: eval.generation's)",
    "n": "samples per prompt (pass@k needs n ≥ k)",
    "k": "the k of pass@k, one metric each",
    "baseline": "what outputs are compared with: an outputs FILE, `base` (the starting model) or a trial",
    "mode": "pairwise: against the baseline; single: a 1-10 grade",
    "length_unit": "what the length control counts: characters or tokens",
    "classifier": "who decides refusal: the judge, a phrase matcher, or both",
    "memory_mb": "memory limit of each sandboxed program",
}
# Method parameters (``method.<param>``), by name.
PARAM_NOTES = {
    "beta": "the KL / temperature coefficient of the preference loss; grpo, ppo: the KL penalty's weight (0: none)",
    "gamma": "SimPO's target reward margin; ppo: GAE's discount factor",
    "label_smoothing": "the assumed label-noise rate ε (conservative/robust DPO)",
    "sft_weight": "weight of an added SFT (NLL) term on the chosen response",
    "logprob_reduction": "sum or mean log-probability over response tokens (null: the method's default)",
    "loss_normalization": "token: average over all target tokens of the step; sequence: over examples",
    "train_on_prompt": "also learn the prompt's tokens",
    "assistant_turns": "learn every assistant turn of a conversation, or only the last",
    "nll_on_prompt": "ORPO's NLL term also covers the prompt",
    "weight_field": "the data field holding each example's importance weight",
    "tau": "temperature of the weights derived from a reward model",
    "reward_model": "a reward model that scores the examples to weight them (instead of `weight_field`)",
    "pooling": "the reward of a sequence: the head's value at its last token, or the mean over response tokens",
    "center_rewards_coefficient": "weight of the penalty that keeps rewards centred at 0",
    "desirable_weight": "KTO's weight of desirable examples",
    "undesirable_weight": "KTO's weight of undesirable examples",
    # Online methods (rollouts): shared sampling keys, then GRPO's, then PPO's.
    "reward": "the reward source: `{verifier: arith | code}`, `{model: RM_DIR or rm stage name}` or "
              "`{judge: pairwise | single}` (online-dpo)",
    "max_new_tokens": "the longest completion a rollout samples",
    "temperature": "the rollout's sampling temperature",
    "top_p": "the rollout's nucleus-sampling top_p",
    "minibatches": "optimizer steps per pass over one rollout (its samples shuffled and cut in this many parts)",
    "rollout_backend": "what samples the rollouts: transformers (the live policy), vllm (an in-process engine sent "
                       "the policy's weights, or its LoRA adapter, before every rollout; GPU) or auto (vllm when "
                       "installed and CUDA is present); opt-in until vLLM weight sync has run on a GPU",
    "group_size": "samples per prompt; advantages are relative to the prompt's group",
    "eps_low": "the ratio's lower clip: 1 - eps_low",
    "eps_high": "the ratio's upper clip: 1 + eps_high (DAPO's clip-higher when > eps_low)",
    "num_iterations": "passes over each rollout (TRL's num_iterations, μ)",
    "advantage_norm": "divide group-centred rewards by the group's std, the batch's, or not at all (Dr. GRPO)",
    "loss_aggregation": "how token losses are averaged, as TRL's loss_type (over the whole optimizer step here)",
    "mask_truncated": "truncated completions (no EOS) get no loss",
    "kl_target": "adapt beta toward this KL per sequence (Ziegler et al. 2019); null: beta stays fixed",
    "kl_horizon": "the adaptive KL controller's horizon, in samples",
    "lam": "GAE's λ",
    "cliprange": "the policy ratio's clip: [1 - cliprange, 1 + cliprange]",
    "cliprange_value": "the value's clip around its rollout value",
    "vf_coef": "weight of the value loss",
    "ent_coef": "weight of the entropy bonus (subtracted from the loss)",
    "reward_clip": "clip scores to [-reward_clip, reward_clip] (after missing_eos_penalty); null: no clipping",
    "missing_eos_penalty": "subtracted from the score of a completion that ends without EOS; null: none",
    "whiten_rewards": "whiten the per-token rewards (scale only) before GAE",
    "ppo_epochs": "passes over each rollout",
    "value_model": "separate: a copy of the starting policy with a scalar head; shared_head: a head on the policy",
}
BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _constraints(metadata: list) -> str:
    parts = []
    for item in metadata:
        for name, sign in BOUNDS.items():
            value = getattr(item, name, None)
            if value is not None:
                parts.append(f"{sign} {value}")
        if getattr(item, "min_length", None):
            parts.append(f"at least {item.min_length}")
    return f" ({', '.join(parts)})" if parts else ""


def type_text(annotation: Any, metadata: list | None = None) -> str:
    """A short reading of a field's type: `a \\| b` for a Literal, `float (> 0)`, `list[int]`."""
    metadata = list(metadata or [])
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        return type_text(inner, metadata + [m for m in extra if not isinstance(m, FieldInfo)]
                         + [x for m in extra if isinstance(m, FieldInfo) for x in m.metadata])
    if origin is Literal:
        return " \\| ".join(str(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " \\| ".join("null" if a is type(None) else type_text(a) for a in get_args(annotation)) + \
            _constraints(metadata)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_text(a) for a in get_args(annotation))}]" + _constraints(metadata)
    name = getattr(annotation, "__name__", str(annotation))
    return name + _constraints(metadata)


def _default_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if value else '""'
    return str(value)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The options model a field holds (a nested block), if any."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def key_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every leaf key of ``model``, nested blocks flattened."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if key in ("method", "stages"):
            out.append((key, "mapping" if key == "method" else "list", "null", NOTES[key]))
            continue
        nested = _model_of(field.annotation)
        if nested is not None:
            out += key_rows(nested, f"{key}.")
            continue
        default = "required" if field.is_required() else _default_text(field.get_default(call_default_factory=True))
        out.append((key, type_text(field.annotation, field.metadata), default, meaning_of(key, field)))
    return out


def meaning_of(key: str, field: FieldInfo) -> str:
    """The key's note here, else its field's description, else its suite option's or parameter's note."""
    last = key.rsplit(".", 1)[-1]
    if key in NOTES:
        return NOTES[key]
    if field.description:
        return field.description
    if key.startswith("eval.") and last in SUITE_NOTES:
        return SUITE_NOTES[last]
    return PARAM_NOTES.get(last, "")


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    return lines + [f"| `{k}` | {t} | `{d}` | {m} |" for k, t, d, m in rows]


def markdown() -> str:
    """The whole reference: top-level keys, then each method's parameters."""
    lines = ["# Spec keys", "",
             "Generated from the spec's models by `python -m harness.config.keys`; a test keeps it current.",
             "Every key may also be set per stage under `stages[i]` (except `name`, `results_dir`, `model`,",
             "`judge`, `ablate`, `seeds`, `tracking`, `resources`), and from the command line with `--set KEY=VALUE`.", ""]
    lines += _table(key_rows(Spec))
    lines += ["", "## Method parameters (`method.*`)", "",
              "Each method takes only its own keys; any other `method.*` key is an error.", ""]
    for name, model in METHOD_MODELS.items():
        rows = [(f"method.{k}", t, d, m) for k, t, d, m in key_rows(model) if k != "name"]
        lines += [f"### `{name}`", ""]
        lines += _table(rows) if rows else ["(no parameters)"]
        lines.append("")
    return "\n".join(line for line in lines).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
