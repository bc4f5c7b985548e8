"""The offline training loop: SFT, reward models and every preference method.

One explicit loop on accelerate's ``Accelerator``.  Methods plug in through
their registry entry (``harness.methods.registry``); this module holds no method math.

Normalization spans the whole optimizer step (DESIGN.md, "Optimizer-step
normalization"): each micro-batch's loss is the sum of its per-example
numerators divided by the step's denominator (response tokens or examples of
*all* micro-batches of the step), so ``batch_size b, grad_accum k`` gives the
same update as ``batch_size k*b, grad_accum 1``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_scheduler

from harness.methods.registry import MethodEntry
from harness.methods.step_inputs import StepInputs, StepState, step_inputs
from harness.train.forward import forward_method, step_denominator

# Counts of expensive work, read by tests to prove caching (never by timing).
COUNTERS: Counter = Counter()

LogFn = Callable[[dict, int], None]


@dataclass
class TrainConfig:
    """The resolved ``train.*`` settings the loop needs."""

    lr: float
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0  # None: no clipping (the norm is still logged)
    seed: int = 0
    shuffle: bool = True
    log_every: int = 10
    eval_every: int | None = None
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"


@dataclass
class TrainResult:
    steps: int
    tokens_seen: int
    wall_s: float
    last_metrics: dict = field(default_factory=dict)


def step_batches(n: int, cfg: TrainConfig) -> list[list[list[int]]]:
    """Example indices grouped as steps -> micro-batches, for the whole run.

    Each epoch is a (seeded) permutation cut into steps of batch_size*grad_accum
    examples; the last step of an epoch may be short.  ``max_steps`` wins over
    ``epochs`` and may run into further epochs.
    """
    per_step = cfg.batch_size * cfg.grad_accum
    steps: list[list[list[int]]] = []
    epoch = 0
    while True:
        order = list(range(n))
        if cfg.shuffle:
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            order = torch.randperm(n, generator=gen).tolist()
        for start in range(0, n, per_step):
            chunk = order[start : start + per_step]
            steps.append([chunk[i : i + cfg.batch_size] for i in range(0, len(chunk), cfg.batch_size)])
            if cfg.max_steps is not None and len(steps) == cfg.max_steps:
                return steps
        epoch += 1
        if cfg.max_steps is None and epoch >= cfg.epochs:
            return steps


def _scheduler(optimizer, cfg: TrainConfig, total: int):
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.scheduler]
    warmup = math.ceil(cfg.warmup_ratio * total)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)


def train(
    model,
    method: MethodEntry,
    params: dict,
    examples: list,
    pad_id: int,
    cfg: TrainConfig,
    ref: torch.Tensor | None = None,
    log: LogFn | None = None,
    validate: Callable[[object], dict] | None = None,
    progress: bool = True,
    kl_ref: dict | None = None,
    log_weights: torch.Tensor | None = None,
    per_example: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``examples`` (encoded rows of the method's batch kind).

    ``ref`` holds the reference log-prob statistics per example (see
    ``harness.train.forward.reference_stats``) when the method needs them.  ``validate(model)``
    returns held-out metrics, logged under ``val/`` every ``eval_every`` steps
    and at the end.  ``kl_ref`` (KTO: reference (sum, count) of each mismatched
    pair of the plan), ``log_weights`` (IW-SFT: [N] log-weights) and
    ``per_example`` (other [N] loss inputs, e.g. the RM margin) feed the step's
    loss inputs (``harness.methods.step_inputs``).
    """
    torch.manual_seed(cfg.seed)
    # cpu=True on a machine without CUDA: otherwise accelerate ignores a torchrun launch on CPU
    # (distributed type NO, every process trains on everything) instead of using gloo DDP.
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = step_batches(len(examples), cfg)
    scheduler = _scheduler(optimizer, cfg, len(plan))
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    log = log or (lambda metrics, step: None)
    tokens_seen, start, metrics, state = 0, time.perf_counter(), {}, StepState()
    bar = tqdm(plan, desc=f"train {method.name}", disable=None if progress else True, unit="step", leave=False)
    for step, micro_batches in enumerate(bar, start=1):
        t0 = time.perf_counter()
        want_logs = step == 1 or step % cfg.log_every == 0 or step == len(plan)
        inputs = step_inputs(accelerator.unwrap_model(model), method, params, examples,
                             [i for mb in micro_batches for i in mb], pad_id, accelerator.device, state,
                             kl_ref, log_weights, per_example)
        metrics, step_tokens = _optimizer_step(
            model, method, params, examples, micro_batches, pad_id, ref, accelerator, cfg, want_logs, inputs
        )
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        COUNTERS["optimizer_steps"] += 1
        tokens_seen += step_tokens
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")
        if want_logs and accelerator.is_main_process:
            metrics.update(lr=lr, tokens_seen=tokens_seen, tokens_per_s=step_tokens / (time.perf_counter() - t0),
                           peak_memory_mb=peak_memory_mb(accelerator.device))
            log({f"train/{k}": v for k, v in metrics.items()}, step)
        due = step == len(plan) or (cfg.eval_every and step % cfg.eval_every == 0)
        if validate and due and accelerator.is_main_process:
            model.eval()
            log({f"val/{k}": v for k, v in validate(accelerator.unwrap_model(model)).items()}, step)
            model.train()
    model.eval()
    return TrainResult(len(plan), tokens_seen, time.perf_counter() - start, metrics)


def peak_memory_mb(device) -> float:
    """Peak memory so far in MiB: CUDA's max allocated on a GPU, else the process's max RSS (Linux: KiB)."""
    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _optimizer_step(model, method, params, examples, micro_batches, pad_id, ref, accelerator, cfg, want_logs,
                    inputs: StepInputs):
    """Forward/backward every micro-batch of one step; returns (metrics, tokens).

    With several processes, each takes every world-th example of each
    micro-batch.  The denominator covers the whole step on all processes and
    DDP averages gradients, so each local loss is scaled by the world size; the
    sum over processes is then exactly the one-process loss.  A process left
    without examples runs one example at weight 0 to keep DDP's collectives in step.
    """
    rank, world = accelerator.process_index, accelerator.num_processes
    denominator = step_denominator(method, params, [[examples[i] for i in mb] for mb in micro_batches])
    local_loss, tokens, weighted = 0.0, 0, Counter()
    for i, mb in enumerate(micro_batches):
        share = mb[rank::world]
        weight = 1.0 if share else 0.0
        share = share or mb[:1]
        batch = [examples[j] for j in share]
        sync = i == len(micro_batches) - 1
        ctx = accelerator.no_sync(model) if not sync else contextlib.nullcontext()
        with ctx, accelerator.autocast():
            numerators, mb_metrics, mb_tokens = forward_method(
                model, method, params, batch, pad_id, ref[share] if ref is not None else None,
                accelerator.device, with_entropy=want_logs, extra=inputs.for_share(share),
            )
            loss = numerators.sum() * (weight / denominator)
            accelerator.backward(loss * world)
        local_loss += loss.item()
        tokens += int(mb_tokens * weight)
        for k, v in mb_metrics.items():
            weighted[k] += float(v) * len(batch) * weight
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or float("inf"))
    n_examples = sum(len(mb) for mb in micro_batches)
    keys = sorted(weighted)
    totals = torch.tensor([local_loss, float(tokens)] + [weighted[k] for k in keys], dtype=torch.float64,
                          device=accelerator.device)
    if world > 1:
        totals = accelerator.reduce(totals, reduction="sum")
    metrics = {k: float(v) / n_examples for k, v in zip(keys, totals[2:])}
    metrics.update(loss=float(totals[0]), grad_norm=float(grad_norm))
    return metrics, int(totals[1])
