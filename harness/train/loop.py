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
import functools
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from harness.console import StepLines
from harness.errors import NonFiniteError
from harness.methods.registry import MethodEntry
from harness.train.forward import step_denominator
from harness.train.inputs import ExampleSet, StepInputs, StepState, batch_inputs
from harness.train.kinds import forward_method, hooks
from harness.train.models import checkpointable, device, enable_checkpointing
from harness.train.plan import TrainConfig, step_batches
from harness.train.precision import autocast

LogFn = Callable[[dict, int], None]


@dataclass
class Callbacks:
    """What the caller hears during training: ``log(metrics, step)``, and ``validate(model)``, which
    returns held-out metrics, logged under ``val/`` every ``eval_every`` steps and at the end."""

    log: LogFn | None = None
    validate: Callable[[object], dict] | None = None
    progress: bool = True


@dataclass
class TrainResult:
    steps: int
    tokens_seen: int
    wall_s: float
    last_metrics: dict = field(default_factory=dict)


def lr_factor(step: int, scheduler: str, warmup: int, total: int) -> float:
    """The lr multiplier at ``step``: transformers' ``get_scheduler`` schedules, the same arithmetic.

    ``constant`` is its ``constant_with_warmup``, ``linear`` and ``cosine`` (half a cycle) its own.  Written
    out here because importing ``transformers.optimization`` imports its trainer utilities and with them
    peft (about a second of start-up on a run that uses neither).
    """
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if scheduler == "constant":
        return 1.0
    if scheduler == "linear":
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    progress = float(step - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def _scheduler(optimizer, cfg: TrainConfig, total: int):
    if cfg.scheduler not in ("constant", "linear", "cosine"):
        raise ValueError(f"unknown scheduler {cfg.scheduler!r}")
    warmup = math.ceil(cfg.warmup_ratio * total)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_factor, scheduler=cfg.scheduler, warmup=warmup, total=total))


def accelerated(model, cfg: TrainConfig, total_steps: int, extra: Sequence[torch.nn.Module] = ()):
    """(accelerator, model, optimizer, scheduler) for ``total_steps`` optimizer steps.

    The trainable parameters of ``extra`` modules (an online method's value model) join the optimizer;
    the modules themselves are not wrapped (the online loop runs in one process).
    """
    # cpu=True on a machine without CUDA: otherwise accelerate ignores a torchrun launch on CPU
    # (distributed type NO, every process trains on everything) instead of using gloo DDP.
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    if cfg.gradient_checkpointing:  # the policy, and an online method's separate value model (a scalar-head LM)
        enable_checkpointing(model)
        for module in extra:
            if checkpointable(module):
                enable_checkpointing(module)
    trainable = [p for m in (model, *extra) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused_adamw(trainable))
    scheduler = _scheduler(optimizer, cfg, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer, scheduler


def fused_adamw(params: Sequence[torch.Tensor]) -> bool | None:
    """True where PyTorch's fused AdamW kernel takes every parameter (floating point, on CPU or CUDA), else None
    (PyTorch's own default).

    transformers' Trainer (and so TRL) defaults to it on both (``optim: adamw_torch_fused`` for torch >= 2.8),
    so this is also the optimizer harness is compared with.  The same AdamW update in one pass over each
    tensor instead of about six: on CPU 4x less optimizer time (a 4.4M-parameter model, 48 steps: 0.19 s
    against 0.76 s); the weights agree with the per-tensor loop's to float rounding (``tests/train/test_loop.py``).
    """
    ok = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return True if ok else None


def train(model, method: MethodEntry, params: dict, data: ExampleSet, cfg: TrainConfig,
          callbacks: Callbacks | None = None) -> TrainResult:
    """Train ``model`` in place on ``data`` (encoded rows of the method's batch kind and their inputs)."""
    torch.manual_seed(cfg.seed)
    calls = callbacks or Callbacks()
    log = calls.log or (lambda metrics, step: None)
    plan = step_batches(len(data), cfg)
    accelerator, model, optimizer, scheduler = accelerated(model, cfg, len(plan))
    model.train()
    inner = accelerator.unwrap_model(model)  # once: unwrapping walks the modules and looks for deepspeed each call
    tokens_seen, start, metrics, state = 0, time.perf_counter(), {}, StepState()
    bar = tqdm(plan, desc=f"train {method.name}", disable=None if calls.progress else True, unit="step",
               leave=False)
    # Without a terminal tqdm draws nothing: plain lines instead, every log_every steps or 30 s.
    lines = StepLines(f"train {method.name}", len(plan), cfg.log_every) if calls.progress and bar.disable else None
    for step, micro_batches in enumerate(bar, start=1):
        t0 = time.perf_counter()
        want_logs = step == 1 or step % cfg.log_every == 0 or step == len(plan)
        with autocast(cfg.mixed_precision, accelerator.device):  # e.g. KTO's policy KL pairs, as their reference
            step_rows = [i for mb in micro_batches for i in mb]
            inputs = hooks(method).step(inner, method, params, data, step_rows, state, accelerator.device)
        metrics, step_tokens = _optimizer_step(model, method, params, data, micro_batches, inputs, accelerator,
                                               cfg, want_logs)
        check_finite(metrics, step, len(plan))  # before the update: the weights stay the last finite ones
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_seen += step_tokens
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")
        if lines is not None and accelerator.is_main_process:
            lines.update(step, metrics["loss"])
        if want_logs and accelerator.is_main_process:
            metrics.update(lr=lr, tokens_seen=tokens_seen, tokens_per_s=step_tokens / (time.perf_counter() - t0),
                           peak_memory_mb=peak_memory_mb(accelerator.device))
            log({f"train/{k}": v for k, v in metrics.items()}, step)
        due = step == len(plan) or (cfg.eval_every and step % cfg.eval_every == 0)
        if calls.validate and due and accelerator.is_main_process:
            model.eval()
            with autocast(cfg.mixed_precision, accelerator.device):
                held_out = calls.validate(inner)
            log({f"val/{k}": v for k, v in held_out.items()}, step)
            model.train()
    model.eval()
    return TrainResult(len(plan), tokens_seen, time.perf_counter() - start, metrics)


def check_finite(metrics: dict, step: int, steps: int) -> None:
    """Stop at the first NaN or infinite loss or gradient norm (every process sees the same reduced values)."""
    for name, what in (("loss", "loss"), ("grad_norm", "gradient norm")):
        if not math.isfinite(metrics[name]):
            raise NonFiniteError(f"non-finite {what} ({metrics[name]}) at step {step} of {steps}; "
                                 "no update was applied (try a lower train.lr or train.max_grad_norm, "
                                 "or check the data)")


def peak_memory_mb(device) -> float:
    """Peak memory so far in MiB: CUDA's max allocated on a GPU, else the process's max RSS (Linux: KiB)."""
    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _optimizer_step(model, method: MethodEntry, params: dict, data: ExampleSet, micro_batches: list[list[int]],
                    inputs: StepInputs, accelerator, cfg: TrainConfig, want_logs: bool):
    """Forward/backward every micro-batch of one step; returns (metrics, tokens).

    With several processes, each takes every world-th example of each
    micro-batch.  The denominator covers the whole step on all processes and
    DDP averages gradients, so each local loss is scaled by the world size; the
    sum over processes is then exactly the one-process loss.  A process left
    without examples runs one example at weight 0 to keep DDP's collectives in step.
    """
    rank, world = accelerator.process_index, accelerator.num_processes
    examples = data.examples
    denominator = step_denominator(method, params, [[examples[i] for i in mb] for mb in micro_batches])
    local_loss, tokens, weighted = 0.0, 0, Counter()
    for i, mb in enumerate(micro_batches):
        share = mb[rank::world]
        weight = 1.0 if share else 0.0
        share = share or mb[:1]
        batch = [examples[j] for j in share]
        sync = i == len(micro_batches) - 1
        ctx = accelerator.no_sync(model) if not sync else contextlib.nullcontext()
        with ctx, autocast(cfg.mixed_precision, accelerator.device):
            numerators, mb_metrics, mb_tokens = forward_method(
                model, method, params, batch, data.pad_id, accelerator.device, batch_inputs(data, inputs, share),
                with_entropy=want_logs,
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


def validation_fn(method: MethodEntry, params: dict, data: ExampleSet, batch_size: int) -> Callable:
    """Held-out loss and metrics over all of ``data``, normalized like one big step.

    Batch-relative inputs (the KTO KL estimate, IW-SFT weights) also span the
    whole held-out set, as one step.
    """

    @torch.no_grad()
    def validate(model) -> dict:
        dev = device()
        examples = data.examples
        starts = range(0, len(examples), batch_size)
        batches = [examples[i : i + batch_size] for i in starts]
        denominator = step_denominator(method, params, batches)
        step = hooks(method).step(model, method, params, data, list(range(len(examples))), StepState(), dev)
        total, sums, n = 0.0, {}, 0
        for start, batch in zip(starts, batches):
            inputs = batch_inputs(data, step, list(range(start, start + len(batch))))
            numerators, metrics, _ = forward_method(model, method, params, batch, data.pad_id, dev, inputs)
            total += float(numerators.sum()) / denominator
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(batch)
            n += len(batch)
        return {"loss": total, **{k: v / n for k, v in sums.items()}}

    return validate
