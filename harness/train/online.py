"""The online loop: rollout -> score -> advantages -> clipped updates, for the methods that learn from their samples.

One iteration (``train.max_steps`` of them, or ``train.epochs`` passes over the prompts):

1. take ``train.batch_size`` prompts (a seeded permutation per epoch, as the offline plan);
2. sample ``n`` completions of each with the policy as it is now (``harness.train.rollout``);
3. score them with the stage's reward source (``harness.train.rewards``);
4. with no gradient: the rollout ("old") log-probs, when an update can differ from the sampling
   policy (more than one pass or minibatch), and the reference log-probs, when the loss uses them;
5. the method's advantages;
6. ``passes`` over the rollout, each cut into ``method.minibatches`` shuffled minibatches, each one
   optimizer step of the method's loss; a minibatch runs as ``train.grad_accum`` micro-batches.

It shares the offline loop's optimizer, schedule, precision, gradient clipping and finiteness
check (``harness.train.loop``).  Method math lives in ``harness.methods.online``; this module
reaches it only through a batch kind's ``OnlineHooks``.  Normalization spans the optimizer step as
in the offline loop: each micro-batch contributes its per-sample numerators divided by the step's
denominator, so ``grad_accum`` never changes the update.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.config.spec import GenerationSpec
from harness.console import StepLines
from harness.eval.backends import TransformersGenerator
from harness.methods import (
    PairLogps,
    entropy_from_logits,
    group_advantages,
    grpo_denominator,
    grpo_numerators,
    kl_per_token,
    pair_preferences,
    reduce_logps,
    with_sft_weight,
    zero_signal_fraction,
)
from harness.methods.registry import GROUPS, SAMPLED_PAIRS, SPIN_PAIRS, BatchKind, MethodEntry
from harness.train.loop import Callbacks, TrainResult, accelerated, check_finite, peak_memory_mb
from harness.train.plan import TrainConfig, step_batches
from harness.train.precision import autocast
from harness.train.rollout import (
    Prompts,
    Samples,
    completion_logps,
    sample,
    sequence_batch,
    with_data_responses,
)

NO_GRAD_CHUNK = 32  # samples per no-grad forward pass (rollout and reference log-probs)


@dataclass
class Minibatch:
    """What a method's loss sees of one micro-batch, rows in the micro-batch's order."""

    logps: torch.Tensor  # [B, L] the policy's completion log-probs now (with gradient)
    old_logps: torch.Tensor  # [B, L] at sampling time (detached)
    ref_logps: torch.Tensor | None  # [B, L] under the reference, when the method uses one
    advantages: torch.Tensor  # [B]
    mask: torch.Tensor  # [B, L] completion tokens that count


def _keep_untruncated(rewards: torch.Tensor, truncated: torch.Tensor, params: dict) -> torch.Tensor:
    """1 per sample, or 0 for a truncated one under ``method.mask_truncated``."""
    return 1.0 - truncated if params.get("mask_truncated") else torch.ones_like(truncated)


@dataclass(frozen=True)
class OnlineHooks:
    """How the online loop runs one batch kind; every function is a thin call into ``harness.methods``."""

    samples_per_prompt: Callable[[dict], int]  # completions sampled per prompt
    passes: Callable[[dict], int]  # updates per rollout
    uses_reference: Callable[[dict], bool]
    advantages: Callable[[torch.Tensor, dict], torch.Tensor]  # rewards [N] -> advantages [N]
    rollout_metrics: Callable[[torch.Tensor, dict], dict]  # rewards [N] -> detached metrics
    numerators: Callable[[MethodEntry, Minibatch, dict], tuple]  # -> per-sample numerators [B], metrics
    denominator: Callable[[list[torch.Tensor], dict], float]  # the step's micro-batch masks -> denominator
    keep: Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor] = _keep_untruncated  # rewards, truncated
    unit: int = 1  # consecutive samples that stay in one minibatch and micro-batch (a pair: 2)
    with_data_responses: bool = False  # each sample is followed by its prompt's data response (SPIN)
    kl_estimator: str = "k3"  # train/kl, per token on the samples (the batch kind's kl_estimator says so)


def _grpo_numerators(method: MethodEntry, mb: Minibatch, params: dict):
    token_losses, metrics = method.loss(mb.logps, mb.old_logps, mb.ref_logps, mb.advantages, mb.mask,
                                        **method.loss_kwargs(params))
    return grpo_numerators(token_losses, mb.mask, params["loss_aggregation"]), metrics


GRPO_HOOKS = OnlineHooks(
    samples_per_prompt=lambda p: p["group_size"],
    passes=lambda p: p["num_iterations"],
    uses_reference=lambda p: p["beta"] > 0,
    advantages=lambda rewards, p: group_advantages(rewards, p["group_size"], p["advantage_norm"]),
    rollout_metrics=lambda rewards, p: {"zero_signal_groups": zero_signal_fraction(rewards, p["group_size"])},
    numerators=_grpo_numerators,
    denominator=lambda masks, p: grpo_denominator(masks, p["loss_aggregation"], p["max_new_tokens"]),
)

def _pair_numerators(method: MethodEntry, mb: Minibatch, params: dict):
    """The preference loss of each consecutive pair of samples, chosen by the sign of its advantages
    (``pair_preferences``); a tied pair (its rows masked out) contributes 0 and no metrics."""
    counts = mb.mask.sum(-1)
    reduction = method.reduction(params)
    sums = (mb.logps * mb.mask).sum(-1)
    policy = reduce_logps(sums, counts, reduction).view(-1, 2)
    ref = reduce_logps((mb.ref_logps * mb.mask).sum(-1), counts, reduction).view(-1, 2)
    nll = (-sums / counts.clamp(min=1)).view(-1, 2)  # mean token NLL, for method.sft_weight
    sign = mb.advantages.view(-1, 2)[:, 0]
    rows = torch.arange(len(sign), device=sign.device)
    c = (sign < 0).long()  # the chosen's column: 0 when the first sample is preferred
    r = 1 - c

    def pairs(keep):
        return PairLogps(policy[rows, c][keep], policy[rows, r][keep], ref[rows, c][keep], ref[rows, r][keep],
                         nll[rows, c][keep])

    every = torch.ones_like(sign, dtype=torch.bool)
    numerators, metrics = method.loss(pairs(every), **method.loss_kwargs(params))
    numerators = with_sft_weight(numerators, nll[rows, c], params.get("sft_weight", 0.0))
    live = sign != 0
    if bool(live.any()) and not bool(live.all()):
        _, metrics = method.loss(pairs(live), **method.loss_kwargs(params))
    return numerators * live.to(numerators.dtype), metrics


def _pair_denominator(masks: list[torch.Tensor], params: dict) -> float:
    """The step's untied pairs (a tied pair's rows are masked out)."""
    rows = sum(int((m.sum(-1) > 0).sum()) for m in masks)
    return float(max(rows // 2, 1))


def _pair_keep(rewards: torch.Tensor, truncated: torch.Tensor, params: dict) -> torch.Tensor:
    return (pair_preferences(rewards) != 0).to(truncated.dtype)


def _pair_metrics(rewards: torch.Tensor, params: dict) -> dict:
    tied = pair_preferences(rewards).view(-1, 2)[:, 0] == 0
    return {"tied_pairs": float(tied.sum()), "tie_fraction": float(tied.double().mean())}


PAIR_HOOKS = OnlineHooks(
    samples_per_prompt=lambda p: 2,
    passes=lambda p: 1,
    uses_reference=lambda p: True,
    advantages=lambda rewards, p: pair_preferences(rewards),
    rollout_metrics=_pair_metrics,
    numerators=_pair_numerators,
    denominator=_pair_denominator,
    keep=_pair_keep,
    unit=2,
    kl_estimator="k1",
)
SPIN_HOOKS = dataclasses.replace(PAIR_HOOKS, samples_per_prompt=lambda p: 1, with_data_responses=True)

ONLINE_HOOKS: dict[BatchKind, OnlineHooks] = {GROUPS: GRPO_HOOKS, SAMPLED_PAIRS: PAIR_HOOKS, SPIN_PAIRS: SPIN_HOOKS}


@dataclass
class Rollout:
    """One iteration's samples and everything the updates need of them, per sample."""

    samples: Samples
    rewards: torch.Tensor  # [N] float64
    advantages: torch.Tensor  # [N] float64
    keep: torch.Tensor  # [N] 1.0, or 0.0 for a truncated sample under method.mask_truncated
    old_logps: list[torch.Tensor] | None  # per sample [len(completion)], when updates need them
    ref_logps: list[torch.Tensor] | None


def _per_sample(model, samples: Samples, pad_id: int, device, mixed: str) -> list[torch.Tensor]:
    """Each sample's completion log-probs under ``model``, with no gradient, in chunks."""
    out = []
    with torch.no_grad(), autocast(mixed, device):
        for start in range(0, len(samples), NO_GRAD_CHUNK):
            rows = range(start, min(start + NO_GRAD_CHUNK, len(samples)))
            batch = sequence_batch([samples.prompt_ids[i] for i in rows], [samples.completion_ids[i] for i in rows],
                                   pad_id).to(device)
            logps, _ = completion_logps(model, batch)
            out += [logps[j, : len(samples.completion_ids[i])].float().cpu() for j, i in enumerate(rows)]
    return out


def _padded(per_sample: list[torch.Tensor], index: list[int], width: int, device) -> torch.Tensor:
    out = torch.zeros((len(index), width), dtype=torch.float32)
    for row, i in enumerate(index):
        out[row, : len(per_sample[i])] = per_sample[i]
    return out.to(device)


def split(items: list[int], parts: int, unit: int = 1) -> list[list[int]]:
    """``items`` cut into ``parts`` contiguous pieces whose sizes differ by at most one ``unit``
    (none empty), never inside a unit (``unit`` consecutive items, e.g. a pair)."""
    units = [items[i : i + unit] for i in range(0, len(items), unit)]
    parts = min(parts, len(units))
    size, extra = divmod(len(units), parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        out.append([i for u in units[start:end] for i in u])
        start = end
    return out


class OnlineTrainer:
    """The state of one online stage's training: model, optimizer, reward source and reference."""

    def __init__(self, model, tokenizer, method: MethodEntry, params: dict, prompts: Prompts, cfg: TrainConfig,
                 reward, reference=None, callbacks: Callbacks | None = None):
        self.method, self.params, self.prompts, self.cfg = method, params, prompts, cfg
        self.hooks = ONLINE_HOOKS[method.batch]
        self.tokenizer, self.reward = tokenizer, reward
        self.pad_id = tokenizer.pad_token_id
        self.calls = callbacks or Callbacks()
        self.reference = reference  # a frozen model, "adapter" (the policy with its adapter off), or None
        if self.hooks.uses_reference(params) and reference is None:
            raise ValueError(f"{method.name} with these params needs a reference model")
        torch.manual_seed(cfg.seed)
        plan_cfg = TrainConfig(**{**vars(cfg), "grad_accum": 1})
        self.plan = [mb[0] for mb in step_batches(len(prompts.ids), plan_cfg)]  # prompt indices per iteration
        self.updates = self.hooks.passes(params) * params["minibatches"]
        self.accelerator, self.model, self.optimizer, self.scheduler = accelerated(
            model, cfg, len(self.plan) * self.updates)
        self.device = self.accelerator.device

    @property
    def policy(self):
        return self.accelerator.unwrap_model(self.model)

    # ---- one rollout

    def rollout(self, iteration: int, prompt_index: list[int]) -> tuple[Rollout, dict]:
        p = self.params
        settings = GenerationSpec(max_new_tokens=p["max_new_tokens"], temperature=p["temperature"],
                                  top_p=p["top_p"], n=self.hooks.samples_per_prompt(p),
                                  seed=self.cfg.seed * 1_000_003 + iteration, backend="transformers")
        self.model.eval()
        t0 = time.perf_counter()
        with autocast(self.cfg.mixed_precision, self.device):
            samples = sample(TransformersGenerator(self.policy, self.tokenizer),
                             [self.prompts.ids[i] for i in prompt_index], settings)
        if self.hooks.with_data_responses:
            samples = with_data_responses(samples, [self.prompts.responses[i] for i in prompt_index], self.tokenizer)
        t1 = time.perf_counter()
        rows = [self.prompts.rows[prompt_index[i]] for i in samples.prompt_index]
        rewards = self.reward.score(rows, samples.prompt_ids, samples.completion_ids, samples.texts).double()
        truncated = torch.tensor(samples.truncated, dtype=torch.float64)
        keep = self.hooks.keep(rewards, truncated, p)
        advantages = self.hooks.advantages(rewards, p).double()
        old = ref = None
        if self.updates > 1:
            old = _per_sample(self.policy, samples, self.pad_id, self.device, self.cfg.mixed_precision)
        if self.hooks.uses_reference(p):
            ref = self._reference_logps(samples)
        lengths = torch.tensor([len(c) for c in samples.completion_ids], dtype=torch.float64)
        metrics = {"reward/mean": rewards.mean().item(), "reward/std": rewards.std().item() if len(rewards) > 1 else 0.0,
                   "reward_raw/mean": rewards.mean().item(),
                   "advantages/mean": advantages.mean().item(),
                   "advantages/std": advantages.std().item() if len(advantages) > 1 else 0.0,
                   "response_length": lengths.mean().item(), "truncated_fraction": truncated.mean().item(),
                   "generation_s": t1 - t0, "scoring_s": time.perf_counter() - t1,
                   **{k: float(v) for k, v in self.hooks.rollout_metrics(rewards, p).items()}}
        metrics.update(getattr(self.reward, "last_metrics", {}))
        if getattr(self.reward, "passes_rate", False):
            metrics["pass_rate"] = rewards.mean().item()
        return Rollout(samples, rewards, advantages, keep, old, ref), metrics

    def _reference_logps(self, samples: Samples) -> list[torch.Tensor]:
        if self.reference == "adapter":
            with self.policy.disable_adapter():
                return _per_sample(self.policy, samples, self.pad_id, self.device, self.cfg.mixed_precision)
        return _per_sample(self.reference, samples, self.pad_id, self.device, self.cfg.mixed_precision)

    # ---- the updates

    def _minibatch(self, ro: Rollout, index: list[int], with_logits: bool) -> tuple[Minibatch, torch.Tensor | None]:
        s = ro.samples
        batch = sequence_batch([s.prompt_ids[i] for i in index], [s.completion_ids[i] for i in index],
                               self.pad_id).to(self.device)
        logps, logits = completion_logps(self.model, batch, with_logits)
        width = logps.shape[1]
        keep = ro.keep[index].to(self.device, logps.dtype)
        mask = batch.completion_mask.to(logps.dtype) * keep[:, None]
        old = _padded(ro.old_logps, index, width, self.device) if ro.old_logps is not None else logps.detach()
        ref = _padded(ro.ref_logps, index, width, self.device) if ro.ref_logps is not None else None
        adv = ro.advantages[index].to(self.device, logps.dtype)
        return Minibatch(logps, old.to(logps.dtype), None if ref is None else ref.to(logps.dtype), adv, mask), logits

    def optimizer_step(self, ro: Rollout, minibatch: list[int], want_logs: bool) -> dict:
        """One optimizer step over ``minibatch`` (sample indices), as ``train.grad_accum`` micro-batches."""
        micro = split(minibatch, self.cfg.grad_accum, self.hooks.unit)
        masks = []
        for m in micro:  # the step's denominator needs every micro-batch's mask first
            widths = [len(ro.samples.completion_ids[i]) for i in m]
            mask = torch.zeros((len(m), max(max(widths), 1)))
            for row, (i, w) in enumerate(zip(m, widths)):
                mask[row, :w] = float(ro.keep[i])
            masks.append(mask)
        denominator = self.hooks.denominator(masks, self.params)
        total, sums, weights = 0.0, defaultdict(float), 0
        for m in micro:
            with autocast(self.cfg.mixed_precision, self.device):
                mb, logits = self._minibatch(ro, m, want_logs)
                numerators, metrics = self.hooks.numerators(self.method, mb, self.params)
                loss = numerators.sum() / denominator
                self.accelerator.backward(loss)
            total += loss.item()
            if want_logs:
                metrics["entropy"] = entropy_from_logits(logits.detach(), mb.mask)
                if mb.ref_logps is not None:
                    kl = kl_per_token(mb.logps.detach(), mb.ref_logps, self.hooks.kl_estimator)
                    metrics["kl"] = (kl * mb.mask).sum() / mb.mask.sum().clamp(min=1)
            for k, v in metrics.items():
                sums[k] += float(v) * len(m)
            weights += len(m)
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm or float("inf"))
        out = {k: v / weights for k, v in sums.items()}
        out.update(loss=total, grad_norm=float(grad_norm))
        return out

    def iterate(self, iteration: int, prompt_index: list[int], want_logs: bool) -> dict:
        ro, metrics = self.rollout(iteration, prompt_index)
        t0 = time.perf_counter()
        self.model.train()
        steps, sums = 0, defaultdict(float)
        unit = self.hooks.unit
        for k in range(self.hooks.passes(self.params)):
            gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + iteration * 101 + k)
            units = torch.randperm(len(ro.samples) // unit, generator=gen).tolist()
            shuffled = [u * unit + j for u in units for j in range(unit)]
            for minibatch in split(shuffled, self.params["minibatches"], unit):
                step_metrics = self.optimizer_step(ro, minibatch, want_logs)
                check_finite(step_metrics, iteration, len(self.plan))
                lr = self.scheduler.get_last_lr()[0]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                steps += 1
                for key, v in step_metrics.items():
                    sums[key] += v
        metrics.update({k: v / steps for k, v in sums.items()})
        metrics.update(lr=lr, update_s=time.perf_counter() - t0, optimizer_steps=steps)
        self.model.eval()
        return metrics

    def train(self) -> TrainResult:
        log = self.calls.log or (lambda metrics, step: None)
        total = len(self.plan)
        lines = StepLines(f"train {self.method.name}", total, self.cfg.log_every) if self.calls.progress else None
        start, metrics, tokens = time.perf_counter(), {}, 0
        for iteration, prompt_index in enumerate(self.plan, start=1):
            want_logs = iteration == 1 or iteration % self.cfg.log_every == 0 or iteration == total
            metrics = self.iterate(iteration, prompt_index, want_logs)
            # response_length is a float mean: round, since int() of mean * n can land one below the sum.
            tokens += round(metrics["response_length"] * len(prompt_index) * self.hooks.samples_per_prompt(self.params))
            if lines is not None:
                lines.update(iteration, metrics["loss"])
            if want_logs:
                metrics.update(tokens_seen=tokens, peak_memory_mb=peak_memory_mb(self.device))
                log({f"train/{k}": v for k, v in metrics.items()}, iteration)
        self.model.eval()
        return TrainResult(total, tokens, time.perf_counter() - start, metrics)


def train_online(model, tokenizer, method: MethodEntry, params: dict, prompts: Prompts, cfg: TrainConfig,
                 reward, reference=None, callbacks: Callbacks | None = None) -> TrainResult:
    """Train ``model`` in place on its own samples of ``prompts`` (see the module docstring)."""
    return OnlineTrainer(model, tokenizer, method, params, prompts, cfg, reward, reference, callbacks).train()
