"""Running one training stage: setup -> data -> reference and per-example inputs -> train.

The caller saves the returned model (``harness.run.sweep``).  A stage's output
is cached there under ``<results_dir>/cache/stages/<key>``, where the key
hashes (the stage's resolved config, its input model, its data fingerprint,
``harness.train.reference.data_fingerprint``); reference log-prob statistics
are cached by ``harness.train.reference``.  What the stage computed rather
than read from a cache is logged with its metrics: ``train/reference_passes``,
``train/reward_passes`` and ``train/data_passes`` at step 0, ``train/optimizer_steps`` at the last step.
Inside ``shared_stage_data`` (a sweep process) stages whose data encode alike tokenize it once.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.cache import digest
from harness.data.audit import audit_metrics, audit_rows, to_json
from harness.data.filters import filter_rows, within_length
from harness.data.load import load_rows, take_fraction
from harness.errors import HarnessError
from harness.methods.registry import METHODS
from harness.profile import phase
from harness.train.inputs import PrepareContext
from harness.train.kinds import hooks
from harness.train.launch import check_devices, launch_stage
from harness.train.loop import Callbacks, TrainResult, train, validation_fn
from harness.train.models import (
    attach_lora,
    device,
    load_model,
    load_tokenizer,
    quantization_config,
    resolve_model_path,
    tokenizer_identity,
    training_dtype,
)
from harness.train.online import train_online
from harness.train.online_hooks import ONLINE_HOOKS
from harness.train.plan import TrainConfig
from harness.train.reference import data_fingerprint
from harness.train.reward_model import load_reward_model
from harness.train.rewards import JudgeAccess, reward_source
from harness.train.rollout import Prompts, encode_prompts
from harness.train.values import build_value_model, check_value_lora
from harness.train.vllm_rollouts import VllmRollouts, resolve_rollout_backend


@dataclass
class StageData:
    train: list
    eval: list
    stats: dict
    rows: list = field(default_factory=list)  # the train rows after data.fraction, before data.filter
    eval_rows: list = field(default_factory=list)
    audit: dict | None = None  # the data audit (``log_audit``), once computed


def prepare_data(stage, tokenizer) -> StageData:
    """Load, subset, filter and tokenize a stage's train (and held-out) data by TRL's rule.

    Every row that is dropped is counted in the returned ``stats``
    (``data/truncated``, ``data/dropped``, ``data/filtered_*``).  KTO stages
    read KTO rows or pairs (each pair gives a desirable and an undesirable row).
    """
    method = METHODS[stage.method.name]
    kind, d = method.batch.row_kind, stage.data
    encode = hooks(method).encode(stage)
    raw_rows = take_fraction(load_rows(d.train, kind), d.fraction, d.seed)
    rows, counts = filter_rows(raw_rows, d.filter, kind)
    examples, stats = encode(tokenizer, rows)
    examples, counts["data/filtered_length"] = within_length(examples, d.filter.min_length, d.filter.max_length)
    if not examples:
        raise HarnessError(f"data.train {d.train!r}: no examples left after filtering and truncation "
                           f"({stats.as_metrics() | counts})")
    held_out, eval_rows = [], []
    if d.eval:
        eval_rows = load_rows(d.eval, kind)
        held_out, _ = encode(tokenizer, eval_rows)
    return StageData(examples, held_out, stats.as_metrics() | counts, raw_rows, eval_rows)


@dataclass
class _DataMemo:
    limit: int
    entries: OrderedDict = field(default_factory=OrderedDict)  # data_key -> StageData, the most recent last


_memo: _DataMemo | None = None  # inside shared_stage_data() only
_memo_lock = threading.Lock()


@contextlib.contextmanager
def shared_stage_data(limit: int = 2) -> Iterator[None]:
    """Inside the block, stages that load, filter, tokenize and audit the same data alike do it once (the
    trials of one sweep process: a beta sweep tokenizes its data once, not once per trial).  The ``limit``
    most recent entries are kept (each holds a tokenized dataset); outside the block nothing is kept."""
    global _memo
    with _memo_lock:
        previous, _memo = _memo, _DataMemo(limit)
    try:
        yield
    finally:
        with _memo_lock:
            _memo = previous


def data_key(stage, input_path: str) -> str:
    """Everything the encoded data and its audit depend on: the tokenizer's files, the data's contents,
    every data.* setting (fraction, seed, filters, truncation, eval), the batch kind and the settings its
    encoder reads (max_length, max_prompt_length, truncation; SFT's assistant_turns, weight_field)."""
    method = METHODS[stage.method.name]
    return digest([tokenizer_identity(input_path), data_fingerprint(stage), stage.data.model_dump(mode="json"),
                   method.batch.name, method.batch.row_kind, method.batch.audited,
                   hooks(method).encode(stage).key()], 32)


def stage_data(stage, input_path: str, tokenizer) -> tuple[StageData, int]:
    """(the stage's data with its audit, 1 if this call encoded it or 0 if it came from ``shared_stage_data``'s
    memo).  ``tokenizer`` is ``load_tokenizer(input_path)``."""
    if _memo is None:
        return _with_audit(stage, prepare_data(stage, tokenizer)), 1
    memo, key = _memo, data_key(stage, input_path)
    with _memo_lock:
        shared = memo.entries.get(key)
        if shared is not None:
            memo.entries.move_to_end(key)
    if shared is not None:  # a copy: the lists are the caller's to keep, the examples are never changed
        return StageData(list(shared.train), list(shared.eval), dict(shared.stats), audit=shared.audit), 0
    data = _with_audit(stage, prepare_data(stage, tokenizer))
    with _memo_lock:
        memo.entries[key] = StageData(list(data.train), list(data.eval), dict(data.stats), audit=data.audit)
        while len(memo.entries) > memo.limit:
            memo.entries.popitem(last=False)
    return data, 1


def _with_audit(stage, data: StageData) -> StageData:
    """``data`` with its audit (a stage that trains on pairs), computed from the rows before ``data.filter``
    (what the filters act on) and the examples as trained; the rows are then dropped."""
    if METHODS[stage.method.name].batch.audited:
        data.audit = audit_rows(data.rows, data.train, data.stats["data/prefix_mismatch"],
                                stage.data.filter.near_threshold, data.eval_rows if stage.data.eval else None)
    data.rows, data.eval_rows = [], []
    return data


def train_config(stage, mixed_precision: str) -> TrainConfig:
    """The loop's settings.  The loop's micro-batch is global (each of N processes takes every N-th
    example of it), and ``train.batch_size`` is per process, so the loop's is batch_size x processes."""
    t = stage.train
    return TrainConfig(
        lr=stage.lr, epochs=t.epochs, max_steps=t.max_steps, batch_size=t.batch_size * t.processes,
        grad_accum=t.grad_accum, scheduler=t.scheduler, warmup_ratio=t.warmup_ratio,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, seed=t.seed, shuffle=t.shuffle,
        log_every=t.log_every, eval_every=t.eval_every, gradient_checkpointing=t.gradient_checkpointing,
        mixed_precision=mixed_precision,
    )


def log_audit(data: StageData, log, log_text) -> None:
    """A stage that trains on pairs logs the data audit (``stage_data``): ``data/audit/*`` and ``audit.json``.

    Pair and duplicate counts are of the rows before ``data.filter`` (what the
    filters act on); token lengths are of the examples as trained.
    """
    if data.audit is None:
        return
    log(audit_metrics(data.audit), 0)
    if log_text is not None:
        log_text(to_json(data.audit), "audit.json")


def disable_dropout(model) -> None:
    """Set p = 0 in every ``torch.nn.Dropout`` of ``model``, as TRL's ``disable_dropout_in_model``.

    The policy trains in ``train()`` mode while reference statistics come from ``eval()`` mode,
    so with dropout on, policy = reference would not give log-ratios of 0 at step 0.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def load_policy(stage, input_path: str, pad_id: int, dtype: torch.dtype):
    """The stage's starting model on ``device()``: a causal LM (4-bit under QLoRA), or an LM with a new scalar head.

    With ``train.disable_dropout`` its dropout is off; a LoRA adapter attached later keeps ``lora.dropout``.
    """
    method = METHODS[stage.method.name]
    quantization = quantization_config(stage.lora.quantize, device().type == "cuda")
    if method.batch.scalar_head:
        torch.manual_seed(stage.train.seed)  # the new scalar head
        model = load_reward_model(input_path, pad_id, dtype, stage.method.params["pooling"])
    else:
        model = load_model(input_path, dtype, quantization)
    if stage.train.disable_dropout:
        disable_dropout(model)
    return model if quantization is not None else model.to(device())  # 4-bit weights load onto the GPU


def check_hardware(stage) -> tuple[torch.dtype, str]:
    """(weight dtype, mixed precision) for the stage on this machine; bf16, fp16 and QLoRA are refused on CPU,
    and more processes than visible GPUs on a GPU machine."""
    on_gpu = device().type == "cuda"
    quantization_config(stage.lora.quantize, on_gpu)
    check_devices(stage.train.processes)
    return training_dtype(stage.train.precision, on_gpu)


def policy_key(stage, input_key: str) -> str:
    """The identity of the policy as loaded: a 4-bit base computes other reference log-probs than its source."""
    return input_key if stage.lora.quantize == "none" else f"{input_key}:{stage.lora.quantize}"


def train_stage(stage, input_path: str, input_key: str, cache_dir: Path, log, force: bool,
                progress: bool = True, log_text=None, judge: JudgeAccess | None = None
                ) -> tuple[object, object, TrainResult]:
    """Train one stage from ``input_path``; returns (model with its adapter, tokenizer, result).

    With ``train.processes`` > 1 an offline stage trains in that many worker processes
    (``harness.train.launch``), and the model comes back with its adapter already merged.

    ``log(metrics, step)`` logs metrics, ``log_text(text, name)`` (optional) an artifact; ``judge``
    is the sweep's judge, for an online stage whose reward is a judge.
    """
    method = METHODS[stage.method.name]
    if method.batch.online:
        return train_online_stage(stage, input_path, cache_dir, log, progress, judge)
    if stage.train.processes > 1:
        return launch_stage(stage, input_path, input_key, cache_dir, log, force, progress, log_text)
    return train_offline_stage(stage, input_path, input_key, cache_dir, log, force, progress, log_text)


def train_offline_stage(stage, input_path: str, input_key: str, cache_dir: Path, log, force: bool,
                        progress: bool = True, log_text=None) -> tuple[object, object, TrainResult]:
    """Train an offline stage in this process, one of ``train.processes`` (``harness.train.worker``) or the only one."""
    method = METHODS[stage.method.name]
    params = stage.method.params
    dtype, mixed = check_hardware(stage)
    if stage.train.packing:  # SFT only (spec rule): rows of up to max_length tokens
        params = {**params, "packing_capacity": stage.train.max_length}
    params = {**params, "pair_forward": stage.train.pair_forward}  # not a method.* key either: forward_pairs's
    with phase("data"):
        tokenizer = load_tokenizer(input_path)
        data, data_passes = stage_data(stage, input_path, tokenizer)
        log({**data.stats, "train/data_passes": data_passes}, 0)
        log_audit(data, log, log_text)
    with phase("model"):
        model = load_policy(stage, input_path, tokenizer.pad_token_id, dtype)
    cfg = train_config(stage, mixed)
    # Reference statistics and other per-example inputs, before the adapter is attached.
    ctx = PrepareContext(stage, model, policy_key(stage, input_key), tokenizer, cache_dir, force, mixed)
    with phase("reference"):
        train_set, held_out = prepare_inputs(method, ctx, data, cfg)
    log({"train/reference_passes": ctx.reference_passes, "train/reward_passes": ctx.reward_passes}, 0)
    lora = stage.lora
    task = "SEQ_CLS" if method.batch.scalar_head else "CAUSAL_LM"
    # The adapter's random init is the trial's: seeded here, not by whatever ran before (the loop
    # seeds again for data order and dropout, after this).
    torch.manual_seed(stage.train.seed)
    model = attach_lora(model, lora.rank, lora.alpha, lora.dropout, lora.target_modules, task)
    validate = validation_fn(method, params, held_out, stage.train.batch_size) if held_out else None
    with phase("training"):
        result = train(model, method, params, train_set, cfg, Callbacks(log, validate, progress))
    log({"train/optimizer_steps": result.steps}, result.steps)
    return model, tokenizer, result


def prepare_inputs(method, ctx: PrepareContext, data: StageData, cfg: TrainConfig):
    """(train set, held-out set or None) with their reference statistics and other per-example inputs.

    Under several processes the first prepares alone (and fills the reference cache, as ``force``
    says) while the others wait, then they read its cached statistics: one reference pass, not N.
    """
    prepare = hooks(method).prepare
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    first = not distributed or torch.distributed.get_rank() == 0
    if not first:
        torch.distributed.barrier()
        ctx.force = False
    train_set = prepare(ctx, data.train, cfg, "train")
    held_out = prepare(ctx, data.eval, None, "eval") if data.eval else None
    if distributed and first:
        torch.distributed.barrier()
    return train_set, held_out


def kl_estimator(stage) -> str | None:
    """What the stage's ``train/kl`` estimates (the stage run's tag ``harness.kl_estimator``), or None where it
    logs no KL: an online stage without a reference (GRPO or PPO at ``beta`` 0)."""
    method = METHODS[stage.method.name]
    if method.batch.online and not ONLINE_HOOKS[method.batch].uses_reference(stage.method.params):
        return None
    return method.kl_estimator


def load_prompts(stage, tokenizer) -> Prompts:
    """An online stage's prompt rows ({prompt, answer?, id?}), after data.fraction, encoded for rollouts."""
    d, params = stage.data, stage.method.params
    kind = METHODS[stage.method.name].batch.row_kind
    rows = take_fraction(load_rows(d.train, kind), d.fraction, d.seed)
    return encode_prompts(tokenizer, rows, stage.train.max_length, d.max_prompt_length, d.truncation,
                          params["max_new_tokens"], with_responses=kind == "sft")


def online_reference(stage, model, dtype, cache_dir: Path):
    """What an online stage's KL term compares with: ``ref_model`` when set, else the starting policy
    (under LoRA the policy with its adapter off; in full fine-tuning a frozen copy made before training)."""
    if stage.ref_model:
        path = resolve_model_path(stage.ref_model, cache_dir)
        return load_model(path, dtype).to(device()).eval().requires_grad_(False)
    if stage.lora.rank > 0:
        return "adapter"
    return copy.deepcopy(model).eval().requires_grad_(False)


def train_online_stage(stage, input_path: str, cache_dir: Path, log, progress: bool = True,
                       judge: JudgeAccess | None = None):
    """Train an online stage (``harness.train.online``); returns (model with its adapter, tokenizer, result).

    Checked before the first rollout: a value model can take the stage's LoRA rank, the prompts
    load, the reward source loads and can score them (a verifier checks every prompt row), and the
    reference is frozen.
    """
    method = METHODS[stage.method.name]
    online = ONLINE_HOOKS[method.batch]
    params = stage.method.params
    dtype, mixed = check_hardware(stage)
    value_kind = online.value_model(params)
    if value_kind is not None:
        check_value_lora(value_kind, input_path, stage.lora)
    tokenizer = load_tokenizer(input_path)
    prompts = load_prompts(stage, tokenizer)
    reward = reward_source(params.get("reward"), tokenizer, cache_dir, prompts, judge)
    reward.check(prompts.rows, "method.reward")
    log(prompts.stats, 0)
    model = load_policy(stage, input_path, tokenizer.pad_token_id, dtype)
    uses_ref = online.uses_reference(params)
    reference = online_reference(stage, model, dtype, cache_dir) if uses_ref and stage.lora.rank == 0 else None
    torch.manual_seed(stage.train.seed)  # the adapter's init, as in train_stage
    lora = stage.lora
    model = attach_lora(model, lora.rank, lora.alpha, lora.dropout, lora.target_modules, "CAUSAL_LM")
    if uses_ref and lora.rank > 0:
        reference = online_reference(stage, model, dtype, cache_dir)
    critic = None
    if value_kind is not None:
        critic = build_value_model(value_kind, input_path, model, tokenizer.pad_token_id, dtype, lora,
                                   stage.train.seed)
        if stage.train.disable_dropout:
            for module in critic.modules():
                disable_dropout(module)
    cfg = train_config(stage, mixed)
    with phase("training"), rollout_generator(stage, input_path, tokenizer) as generator:
        result = train_online(model, tokenizer, method, params, prompts, cfg, reward, reference,
                              Callbacks(log, None, progress), critic, generator)
    return model, tokenizer, result


@contextlib.contextmanager
def rollout_generator(stage, input_path: str, tokenizer):
    """The vLLM engine that samples an online stage's rollouts (``method.rollout_backend`` resolved to vllm),
    serving its input model and shut down with the stage; None when transformers samples."""
    if resolve_rollout_backend(stage.method.params["rollout_backend"]) != "vllm":
        yield None
        return
    with VllmRollouts(input_path, tokenizer, stage.train.max_length, stage.lora.rank, stage.train.seed) as engine:
        yield engine
