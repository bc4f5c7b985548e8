"""Running one training stage: data -> reference log-probs -> train -> checkpoint.

A stage's output is cached under ``<results_dir>/cache/stages/<key>`` where
the key hashes (the stage's resolved config, its input model, its data
fingerprint); trials that share a prefix of identical stages train it once.
Reference log-prob statistics are cached under ``cache/reflogps/`` by
(reference model, data, template, lengths, truncation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.cache import atomic_path, digest
from harness.data.audit import audit_metrics, audit_rows, to_json
from harness.data.filters import filter_rows, within_length
from harness.data.load import ROW_KINDS, fingerprint, load_rows, pairs_to_kto, take_fraction
from harness.data.tokenization import encode_kto, encode_pairs, encode_sft
from harness.errors import HarnessError
from harness.methods.registry import METHODS
from harness.methods.step_inputs import StepState, kl_pair_logps, step_inputs, step_kl_pairs
from harness.train.forward import forward_method, kto_reference_stats, reference_stats, step_denominator
from harness.train.loop import COUNTERS, TrainConfig, step_batches, train
from harness.train.models import (
    attach_lora,
    load_model,
    load_tokenizer,
    model_identity,
    resolve_model_path,
    training_dtype,
)
from harness.train.reward_model import check_reward_model, load_reward_model, score_responses


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class StageData:
    train: list
    eval: list
    stats: dict
    rows: list = field(default_factory=list)  # the train rows after data.fraction, before data.filter
    eval_rows: list = field(default_factory=list)


def weight_field(stage) -> str | None:
    """The data field holding IW-SFT weights, or None when the method reads none."""
    params = stage.method.params
    if stage.method.name == "iw-sft" and params.get("reward_model") is None:
        return params["weight_field"]
    return None


def encoder(stage):
    """``encode(tokenizer, rows) -> (examples, TokenStats)`` for the stage's row kind and settings."""
    d, t, params = stage.data, stage.train, stage.method.params
    kind = METHODS[stage.method.name].batch_kind
    limits = (t.max_length, d.max_prompt_length, d.truncation)
    if kind == "sft":
        turns, field = params["assistant_turns"], weight_field(stage)
        return lambda tok, rows: encode_sft(tok, rows, *limits, assistant_turns=turns, weight_field=field)
    if kind == "kto":
        return lambda tok, rows: encode_kto(tok, pairs_to_kto(rows), *limits)
    return lambda tok, rows: encode_pairs(tok, rows, *limits)


def prepare_data(stage, tokenizer) -> StageData:
    """Load, subset, filter and tokenize a stage's train (and held-out) data by TRL's rule.

    Every row that is dropped is counted in the returned ``stats``
    (``data/truncated``, ``data/dropped``, ``data/filtered_*``).  KTO stages
    read KTO rows or pairs (each pair gives a desirable and an undesirable row).
    """
    kind = ROW_KINDS[METHODS[stage.method.name].batch_kind]
    d = stage.data
    encode = encoder(stage)
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


def data_fingerprint(stage) -> str:
    uris = [stage.data.train] + ([stage.data.eval] if stage.data.eval else [])
    return digest([fingerprint(u) for u in uris], 16)


def reference_for(stage, policy, policy_key: str, tokenizer, examples: list, cache_dir: Path,
                  force: bool, tag: str = "train", compute=None, rows: int | None = None) -> torch.Tensor:
    """Reference statistics for ``examples``, from cache or one no-grad pass.

    ``compute(model, examples, pad_id, device)`` makes them: by default
    ``reference_stats`` ([N, 4] per pair); KTO passes its own (``kto_references``),
    with ``rows`` the expected row count and ``tag`` naming what is computed.
    The reference is ``stage.ref_model`` when set, else the stage's starting
    policy (which, under LoRA, is exactly the adapter-disabled model: this runs
    before the adapter is attached).
    """
    compute = compute or reference_stats
    rows = len(examples) if rows is None else rows
    ref_path = resolve_model_path(stage.ref_model, cache_dir) if stage.ref_model else None
    ref_key = model_identity(ref_path) if ref_path else policy_key
    # Everything that decides the example list and its tokens: the policy's
    # tokenizer (part of policy_key), the data and every data.* setting, max_length.
    key = digest([ref_key, policy_key, data_fingerprint(stage), stage.data.model_dump(mode="json"),
                  stage.train.max_length, METHODS[stage.method.name].batch_kind, tag], 16)
    path = cache_dir / "reflogps" / f"{key}.pt"
    if path.exists() and not force:
        stats = torch.load(path)
        if stats.shape[0] == rows:
            return stats
    ref_model = policy
    if ref_path:
        ref_model = load_model(ref_path).to(device())
    ref_model.eval()
    COUNTERS["reference_passes"] += 1
    stats = compute(ref_model, examples, tokenizer.pad_token_id, device())
    with atomic_path(path) as tmp:
        torch.save(stats, tmp)
    return stats


def plan_kl_pairs(n: int, cfg: TrainConfig | None) -> list[tuple[int, int]]:
    """Every mismatched (prompt, completion) pair the KTO KL estimate will need, in a fixed order.

    ``cfg`` None: the held-out set as one step (validation).
    """
    steps = [list(range(n))] if cfg is None else [[i for mb in step for i in mb] for step in step_batches(n, cfg)]
    return sorted({pair for step in steps for pair in step_kl_pairs(step)})


def kto_references(stage, model, key: str, tokenizer, examples: list, cfg: TrainConfig | None,
                   cache_dir: Path, force: bool, tag: str) -> tuple[torch.Tensor, dict]:
    """KTO reference statistics: [N, 2] per example, and {(i, j): (sum, count)} per mismatched pair.

    The mismatched pairs follow the step plan, so the plan's settings are part of their cache key.
    """
    own = reference_for(stage, model, key, tokenizer, examples, cache_dir, force, tag, kto_reference_stats)
    pairs = plan_kl_pairs(len(examples), cfg)
    plan = None if cfg is None else [cfg.seed, cfg.batch_size, cfg.grad_accum, cfg.epochs, cfg.max_steps, cfg.shuffle]

    def compute(model_, examples_, pad_id, dev):
        return kl_pair_logps(model_, examples_, pairs, pad_id, dev)

    stats = reference_for(stage, model, key, tokenizer, examples, cache_dir, force, f"{tag}-kl-{digest(plan, 16)}",
                          compute, rows=len(pairs))
    return own, dict(zip(pairs, stats.tolist()))


def example_margins(stage, examples: list) -> dict | None:
    """RM: {"margin": [N]} from the rows' ``margin`` field (0 where absent), or None when no row has one."""
    if METHODS[stage.method.name].batch_kind != "rm" or not examples:
        return None
    sources = {ex.source for ex in examples}
    margins = {}
    for source in sources:
        for row in load_rows(source, "pairs"):
            if "margin" in row.data:
                value = row.data["margin"]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise HarnessError(f"{row.where}: field 'margin': expected a number, got {value!r}")
                margins[(row.source, row.line)] = float(value)
    if not margins:
        return None
    return {"margin": torch.tensor([margins.get((ex.source, ex.line), 0.0) for ex in examples], dtype=torch.float64)}


def example_log_weights(stage, tokenizer, examples: list, cache_dir: Path) -> torch.Tensor | None:
    """IW-SFT log-weights [N]: log of the data field, or r / tau from ``method.reward_model``."""
    if stage.method.name != "iw-sft" or not examples:
        return None
    params = stage.method.params
    if params.get("reward_model") is None:
        return torch.tensor([ex.weight for ex in examples], dtype=torch.float64).log()
    path = resolve_model_path(params["reward_model"], cache_dir)
    check_reward_model(path, "method.reward_model")
    if load_tokenizer(path).get_vocab() != tokenizer.get_vocab():
        raise HarnessError(f"method.reward_model: {params['reward_model']!r} has a different tokenizer than the "
                           "policy; an IW-SFT reward model must share the policy's tokenizer")
    rm = load_reward_model(path, tokenizer.pad_token_id).to(device()).eval()
    COUNTERS["reward_passes"] += 1
    rewards = score_responses(rm, [ex.prompt_ids for ex in examples], [ex.response_ids for ex in examples],
                              tokenizer.pad_token_id, device())
    return rewards / params["tau"]


def train_config(stage, mixed_precision: str) -> TrainConfig:
    t = stage.train
    return TrainConfig(
        lr=stage.lr, epochs=t.epochs, max_steps=t.max_steps, batch_size=t.batch_size,
        grad_accum=t.grad_accum, scheduler=t.scheduler, warmup_ratio=t.warmup_ratio,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, seed=t.seed, shuffle=t.shuffle,
        log_every=t.log_every, eval_every=t.eval_every, gradient_checkpointing=t.gradient_checkpointing,
        mixed_precision=mixed_precision,
    )


def validation_fn(method, params, examples, pad_id, ref, batch_size: int, kl_ref: dict | None = None,
                  log_weights: torch.Tensor | None = None, per_example: dict | None = None) -> Callable:
    """Held-out loss and metrics over all of ``examples``, normalized like one big step.

    Batch-relative inputs (the KTO KL estimate, IW-SFT weights) also span the
    whole held-out set, as one step.
    """

    @torch.no_grad()
    def validate(model) -> dict:
        batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
        denominator = step_denominator(method, params, batches)
        inputs = step_inputs(model, method, params, examples, list(range(len(examples))), pad_id, device(),
                             StepState(), kl_ref, log_weights, per_example)
        total, sums, n = 0.0, {}, 0
        for start, batch in zip(range(0, len(examples), batch_size), batches):
            rows = ref[start : start + len(batch)] if ref is not None else None
            extra = inputs.for_share(list(range(start, start + len(batch))))
            numerators, metrics, _ = forward_method(model, method, params, batch, pad_id, rows, device(),
                                                    extra=extra)
            total += float(numerators.sum()) / denominator
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(batch)
            n += len(batch)
        return {"loss": total, **{k: v / n for k, v in sums.items()}}

    return validate


def log_audit(stage, data: StageData, log, log_text) -> None:
    """A stage that trains on pairs logs the data audit: ``data/audit/*`` and ``audit.json``.

    Pair and duplicate counts are of the rows before ``data.filter`` (what the
    filters act on); token lengths are of the examples as trained.
    """
    if ROW_KINDS[METHODS[stage.method.name].batch_kind] != "pairs":
        return
    report = audit_rows(data.rows, data.train, data.stats["data/prefix_mismatch"],
                        stage.data.filter.near_threshold, data.eval_rows if stage.data.eval else None)
    log(audit_metrics(report), 0)
    if log_text is not None:
        log_text(to_json(report), "audit.json")


def train_stage(stage, input_path: str, input_key: str, cache_dir: Path, log, force: bool,
                progress: bool = True, log_text=None):
    """Train one stage from ``input_path``; returns (model with adapter merged, tokenizer, result).

    ``log(metrics, step)`` logs metrics, ``log_text(text, name)`` (optional) an artifact.
    """
    method = METHODS[stage.method.name]
    params = stage.method.params
    if stage.train.packing:  # SFT only (spec rule): rows of up to max_length tokens
        params = {**params, "packing_capacity": stage.train.max_length}
    tokenizer = load_tokenizer(input_path)
    data = prepare_data(stage, tokenizer)
    log(data.stats, 0)
    log_audit(stage, data, log, log_text)
    dtype, mixed = training_dtype(stage.train.precision, device().type == "cuda")
    if method.batch_kind == "rm":
        torch.manual_seed(stage.train.seed)  # the new scalar head
        model = load_reward_model(input_path, tokenizer.pad_token_id, dtype, params["pooling"]).to(device())
    else:
        model = load_model(input_path, dtype).to(device())
    cfg = train_config(stage, mixed)
    ref = held_ref = kl_ref = held_kl = None
    if method.batch_kind == "kto":
        ref, kl_ref = kto_references(stage, model, input_key, tokenizer, data.train, cfg, cache_dir, force, "train")
        if data.eval:
            held_ref, held_kl = kto_references(stage, model, input_key, tokenizer, data.eval, None, cache_dir,
                                               force, "eval")
    elif method.needs_ref:
        ref = reference_for(stage, model, input_key, tokenizer, data.train, cache_dir, force)
        if data.eval:
            held_ref = reference_for(stage, model, input_key, tokenizer, data.eval, cache_dir, force, "eval")
    weights = [example_log_weights(stage, tokenizer, ex, cache_dir) for ex in (data.train, data.eval)]
    margins = [example_margins(stage, ex) for ex in (data.train, data.eval)]
    lora = stage.lora
    task = "SEQ_CLS" if method.batch_kind == "rm" else "CAUSAL_LM"
    model = attach_lora(model, lora.rank, lora.alpha, lora.dropout, lora.target_modules, task)
    validate = None
    if data.eval:
        validate = validation_fn(method, params, data.eval, tokenizer.pad_token_id, held_ref,
                                 stage.train.batch_size, held_kl, weights[1], margins[1])
    result = train(model, method, params, data.train, tokenizer.pad_token_id, cfg, ref=ref, log=log,
                   validate=validate, progress=progress, kl_ref=kl_ref, log_weights=weights[0],
                   per_example=margins[0])
    return model, tokenizer, result
