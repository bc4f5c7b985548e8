"""The online loop: rollout -> score -> advantages -> clipped updates, for the methods that learn from their samples.

One iteration (``train.max_steps`` of them, or ``train.epochs`` passes over the prompts):

1. take ``train.batch_size`` prompts (a seeded permutation per epoch, as the offline plan);
2. sample ``n`` completions of each with the policy as it is now (``harness.train.rollout``): the live
   policy through transformers, or a vLLM engine sent the policy's weights first
   (``harness.train.vllm_rollouts``, ``method.rollout_backend``); SPIN pairs each with the prompt's
   data response;
3. score them with the stage's reward source (``harness.train.rewards``), shaped by the method
   (PPO's missing-EOS penalty and clipping);
4. with no gradient: the rollout ("old") log-probs, when an update can differ from the sampling
   policy (more than one pass or minibatch) or the advantages read them (PPO's KL-shaped rewards),
   the value model's values of the same states (PPO), and the reference log-probs, when used;
5. the method's advantages: one per sample (GRPO), a preference sign per sample of each pair (online
   DPO, SPIN; a tied pair is left out), or one per token, with the value model's returns (PPO);
6. ``passes`` over the rollout, each cut into ``method.minibatches`` shuffled minibatches, each one
   optimizer step of the method's loss; a minibatch runs as ``train.grad_accum`` micro-batches.

It shares the offline loop's optimizer, schedule, precision, gradient clipping and finiteness
check (``harness.train.loop``); a value model (``harness.train.values``) trains in the same
optimizer step.  Method math lives in ``harness.methods.online``; this module reaches it only
through a batch kind's ``OnlineHooks`` (``harness.train.online_hooks``).  Normalization spans the
optimizer step as in the offline loop: each micro-batch contributes its per-sample numerators
divided by the step's denominator, so ``grad_accum`` never changes the update.  The loop runs in
one process.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from harness.config.spec import GenerationSpec
from harness.console import StepLines
from harness.eval.backends import TransformersGenerator
from harness.methods import entropy_from_logits, kl_per_token, masked_mean
from harness.methods.registry import MethodEntry
from harness.train.loop import Callbacks, TrainResult, accelerated, check_finite, peak_memory_mb
from harness.train.online_hooks import ONLINE_HOOKS, Minibatch, RolloutTokens
from harness.train.plan import TrainConfig, step_batches
from harness.train.precision import autocast
from harness.train.rollout import (
    Prompts,
    Samples,
    forward,
    logps_of,
    sample,
    sequence_batch,
    with_data_responses,
)

NO_GRAD_CHUNK = 32  # samples per no-grad forward pass (rollout and reference log-probs)


@dataclass
class Rollout:
    """One iteration's samples and everything the updates need of them, per sample."""

    samples: Samples
    rewards: torch.Tensor  # [N] float64, the scores the method optimizes
    advantages: torch.Tensor  # [N] per sample, or [N, T] per token (float64, 0 past each completion)
    keep: torch.Tensor  # [N] 1.0, or 0.0 for a truncated sample under method.mask_truncated
    old_logps: list[torch.Tensor] | None  # per sample [len(completion)], when updates need them
    ref_logps: list[torch.Tensor] | None
    returns: torch.Tensor | None = None  # [N, T] the value model's targets, when the method has one
    old_values: torch.Tensor | None = None  # [N, T] the value model's at rollout time


def _per_sample(model, samples: Samples, pad_id: int, device, mixed: str, temperature: float,
                critic=None) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """Each sample's completion log-probs under ``model`` (and the critic's values of the same states),
    with no gradient, in chunks: per sample [len(completion)] float32 on the CPU."""
    logps_out, values_out = [], [] if critic is not None else None
    with torch.no_grad(), autocast(mixed, device):
        for start in range(0, len(samples), NO_GRAD_CHUNK):
            rows = range(start, min(start + NO_GRAD_CHUNK, len(samples)))
            batch = sequence_batch([samples.prompt_ids[i] for i in rows], [samples.completion_ids[i] for i in rows],
                                   pad_id).to(device)
            out = forward(model, batch, hidden_states=critic is not None and critic.shares_forward)
            logps, _ = logps_of(out, batch, temperature=temperature)
            values = critic.values(batch, out) if critic is not None else None
            for j, i in enumerate(rows):
                n = len(samples.completion_ids[i])
                logps_out.append(logps[j, :n].float().cpu())
                if values is not None:
                    values_out.append(values[j, :n].float().cpu())
    return logps_out, values_out


def _padded(per_sample: list[torch.Tensor], index: list[int], width: int, device,
            dtype=torch.float32) -> torch.Tensor:
    """Rows ``index`` of ragged per-sample tensors, right-padded with 0 to ``width`` columns: [len(index), width]."""
    out = torch.zeros((len(index), width), dtype=dtype)
    for row, i in enumerate(index):
        out[row, : len(per_sample[i])] = per_sample[i]
    return out.to(device)


def _rows(x: torch.Tensor | None, index: list[int], width: int, like: torch.Tensor) -> torch.Tensor | None:
    """Rows ``index`` of a per-sample [N] or per-token [N, T] rollout tensor, cut to ``width`` columns."""
    if x is None:
        return None
    x = x[index]
    return (x if x.dim() == 1 else x[:, :width]).to(like.device, like.dtype)


def _spread(x: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """(mean, std) of per-sample [N] values, or of per-token [N, T] values over the mask's tokens."""
    if x.dim() == 1:
        return x.mean().item(), x.std().item() if len(x) > 1 else 0.0
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = ((x - mean) ** 2 * mask).sum() / (n - 1) if n > 1 else torch.zeros(())
    return mean.item(), var.sqrt().item()


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
    """The state of one online stage's training: model, optimizer, reward source, reference and value model."""

    def __init__(self, model, tokenizer, method: MethodEntry, params: dict, prompts: Prompts, cfg: TrainConfig,
                 reward, reference=None, callbacks: Callbacks | None = None, critic=None, generator=None):
        self.method, self.params, self.prompts, self.cfg = method, params, prompts, cfg
        # An engine that samples for the policy (harness.train.vllm_rollouts), sent its weights before each
        # rollout; None: the live policy samples through transformers.
        self.generator = generator
        self.hooks = ONLINE_HOOKS[method.batch]
        self.tokenizer, self.reward = tokenizer, reward
        self.pad_id = tokenizer.pad_token_id
        self.calls = callbacks or Callbacks()
        self.reference = reference  # a frozen model, "adapter" (the policy with its adapter off), or None
        self.critic = critic  # harness.train.values: a value model, or None
        if self.hooks.uses_reference(params) and reference is None:
            raise ValueError(f"{method.name} with these params needs a reference model")
        if (self.hooks.value_model(params) is not None) != (critic is not None):
            raise ValueError(f"{method.name}: method.value_model is {self.hooks.value_model(params)!r}, "
                             f"but the trainer was given {'a' if critic is not None else 'no'} value model")
        self.state = self.hooks.new_state(params)
        torch.manual_seed(cfg.seed)
        plan_cfg = TrainConfig(**{**vars(cfg), "grad_accum": 1})
        self.plan = [mb[0] for mb in step_batches(len(prompts.ids), plan_cfg)]  # prompt indices per iteration
        self.updates = self.hooks.passes(params) * params["minibatches"]
        extra = critic.modules() if critic is not None else []
        # The schedule spans the steps that will run: a rollout with fewer units (samples, or pairs) than
        # method.minibatches is cut into one minibatch per unit (``split``).
        steps = sum(self.hooks.passes(params) * min(params["minibatches"], self._units(len(p))) for p in self.plan)
        self.accelerator, self.model, self.optimizer, self.scheduler = accelerated(model, cfg, steps, extra)
        self.trainable = [p for m in (self.model, *extra) for p in m.parameters() if p.requires_grad]
        self.device = self.accelerator.device

    def _units(self, prompts: int) -> int:
        """Units (``OnlineHooks.unit`` samples that stay together) of a rollout of ``prompts`` prompts."""
        per_prompt = self.hooks.samples_per_prompt(self.params) * (2 if self.hooks.with_data_responses else 1)
        return prompts * per_prompt // self.hooks.unit

    @property
    def policy(self):
        return self.accelerator.unwrap_model(self.model)

    def _train_mode(self, on: bool) -> None:
        for module in (self.model, *(self.critic.modules() if self.critic is not None else [])):
            module.train(on)

    # ---- one rollout

    def rollout(self, iteration: int, prompt_index: list[int]) -> tuple[Rollout, dict]:
        """Sample completions of ``prompt_index`` with the policy as it is now, then build the ``Rollout`` of them."""
        p = self.params
        self._train_mode(False)
        generator, sync_s = self.rollout_generator()
        settings = GenerationSpec(max_new_tokens=p["max_new_tokens"], temperature=p["temperature"],
                                  top_p=p["top_p"], n=self.hooks.samples_per_prompt(p),
                                  seed=self.cfg.seed * 1_000_003 + iteration, backend=generator.name)
        t0 = time.perf_counter()
        # The live policy samples under the training autocast; an engine runs its own kernels in its own dtype.
        precision = autocast(self.cfg.mixed_precision, self.device) if self.generator is None else nullcontext()
        with precision:
            samples = sample(generator, [self.prompts.ids[i] for i in prompt_index], settings)
        generation_s = time.perf_counter() - t0
        if self.hooks.with_data_responses:
            samples = with_data_responses(samples, [self.prompts.responses[i] for i in prompt_index], self.tokenizer)
        rows = [self.prompts.rows[prompt_index[i]] for i in samples.prompt_index]
        ro, metrics = self.build_rollout(samples, rows)
        return ro, {**metrics, "generation_s": generation_s, **({} if sync_s is None else {"weight_sync_s": sync_s})}

    def rollout_generator(self) -> tuple[object, float | None]:
        """What samples this rollout, holding the policy as it is now, and the seconds its weight sync took
        (None: transformers samples with the live policy, nothing to sync)."""
        if self.generator is None:
            return TransformersGenerator(self.policy, self.tokenizer), None
        t0 = time.perf_counter()
        self.generator.sync(self.policy)
        return self.generator, time.perf_counter() - t0

    def build_rollout(self, samples: Samples, rows: list) -> tuple[Rollout, dict]:
        """Score ``samples`` (of prompt ``rows``), then with no gradient the log-probs and values the
        method reads, then its advantages: the ``Rollout`` the updates train on, and its metrics."""
        p = self.params
        t0 = time.perf_counter()
        raw = self.reward.score(rows, samples.prompt_ids, samples.completion_ids, samples.texts).double()
        truncated = torch.tensor(samples.truncated, dtype=torch.float64)
        scores = self.hooks.scores(raw, truncated, p).double()
        keep = self.hooks.keep(scores, truncated, p)
        scoring_s = time.perf_counter() - t0
        old = ref = values = None
        if self.updates > 1 or self.hooks.rollout_logps(p) or self.critic is not None:
            old, values = _per_sample(self.policy, samples, self.pad_id, self.device, self.cfg.mixed_precision,
                                      self.params["temperature"],
                                      self.critic)
        if self.hooks.uses_reference(p):
            ref = self._reference_logps(samples)
        index = list(range(len(samples)))
        width = max(max((len(c) for c in samples.completion_ids), default=0), 1)
        mask = _padded([torch.ones(len(c)) for c in samples.completion_ids], index, width, "cpu", torch.float64)

        def tokens(per_sample):
            return None if per_sample is None else _padded(per_sample, index, width, "cpu", torch.float64)

        adv = self.hooks.advantages(RolloutTokens(scores, mask, tokens(old), tokens(ref), tokens(values)), p,
                                    self.state)
        lengths = torch.tensor([len(c) for c in samples.completion_ids], dtype=torch.float64)
        adv_mean, adv_std = _spread(adv.advantages, mask)
        metrics = {"reward/mean": scores.mean().item(), "reward/std": scores.std().item() if len(scores) > 1 else 0.0,
                   "reward_raw/mean": raw.mean().item(), "advantages/mean": adv_mean, "advantages/std": adv_std,
                   "response_length": lengths.mean().item(), "truncated_fraction": truncated.mean().item(),
                   "completion_tokens": lengths.sum().item(), "scoring_s": scoring_s,
                   **{k: float(v) for k, v in adv.metrics.items()}, **getattr(self.reward, "last_metrics", {})}
        return Rollout(samples, scores, adv.advantages.double(), keep, old, ref, adv.returns, tokens(values)), metrics

    def _reference_logps(self, samples: Samples) -> list[torch.Tensor]:
        if self.reference == "adapter":
            with self.policy.disable_adapter():
                return _per_sample(self.policy, samples, self.pad_id, self.device, self.cfg.mixed_precision,
                                   self.params["temperature"])[0]
        return _per_sample(self.reference, samples, self.pad_id, self.device, self.cfg.mixed_precision,
                           self.params["temperature"])[0]

    # ---- the updates

    def _minibatch(self, ro: Rollout, index: list[int], with_logits: bool) -> tuple[Minibatch, torch.Tensor | None]:
        s = ro.samples
        batch = sequence_batch([s.prompt_ids[i] for i in index], [s.completion_ids[i] for i in index],
                               self.pad_id).to(self.device)
        out = forward(self.model, batch, hidden_states=self.critic is not None and self.critic.shares_forward)
        logps, logits = logps_of(out, batch, with_logits or self.hooks.needs_logits(self.params),
                                 self.params["temperature"])
        width = logps.shape[1]
        keep = ro.keep[index].to(self.device, logps.dtype)
        mask = batch.completion_mask.to(logps.dtype) * keep[:, None]
        old = _padded(ro.old_logps, index, width, self.device) if ro.old_logps is not None else logps.detach()
        ref = _padded(ro.ref_logps, index, width, self.device) if ro.ref_logps is not None else None
        values = self.critic.values(batch, out) if self.critic is not None else None
        mb = Minibatch(logps, old.to(logps.dtype), None if ref is None else ref.to(logps.dtype),
                       _rows(ro.advantages, index, width, logps), mask, values,
                       _rows(ro.old_values, index, width, logps), _rows(ro.returns, index, width, logps), logits)
        return mb, logits

    def optimizer_step(self, ro: Rollout, minibatch: list[int], want_logs: bool) -> dict | None:
        """One optimizer step's gradients over ``minibatch`` (sample indices), as ``train.grad_accum``
        micro-batches, and its metrics; None, with no gradient, when no sample of it counts."""
        micro = split(minibatch, self.cfg.grad_accum, self.hooks.unit)
        masks = []
        for m in micro:  # the step's denominator needs every micro-batch's mask first
            widths = [len(ro.samples.completion_ids[i]) for i in m]
            mask = torch.zeros((len(m), max(max(widths), 1)))
            for row, (i, w) in enumerate(zip(m, widths)):
                mask[row, :w] = float(ro.keep[i])
            masks.append(mask)
        if not any(bool(m.any()) for m in masks):
            return None  # no sample counts (every pair tied, or every completion masked): nothing to learn
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
        grad_norm = self.accelerator.clip_grad_norm_(self.trainable, self.cfg.max_grad_norm or float("inf"))
        out = {k: v / weights for k, v in sums.items()}
        out.update(loss=total, grad_norm=float(grad_norm))
        return out

    def iterate(self, iteration: int, prompt_index: list[int], want_logs: bool) -> dict:
        ro, metrics = self.rollout(iteration, prompt_index)
        t0 = time.perf_counter()
        self._train_mode(True)
        steps, skipped, sums = 0, 0, defaultdict(float)
        unit = self.hooks.unit
        for k in range(self.hooks.passes(self.params)):
            gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + iteration * 101 + k)
            units = torch.randperm(len(ro.samples) // unit, generator=gen).tolist()
            shuffled = [u * unit + j for u in units for j in range(unit)]
            for minibatch in split(shuffled, self.params["minibatches"], unit):
                lr = self.scheduler.get_last_lr()[0]
                step_metrics = self.optimizer_step(ro, minibatch, want_logs)
                if step_metrics is None:  # no update (AdamW's momentum would still move the weights)
                    skipped += 1
                else:
                    check_finite(step_metrics, iteration, len(self.plan))
                    self.optimizer.step()
                    steps += 1
                    for key, v in step_metrics.items():
                        sums[key] += v
                self.scheduler.step()  # the schedule counts every planned step
                self.optimizer.zero_grad(set_to_none=True)
        metrics.update({k: v / steps for k, v in sums.items()} if steps else {"loss": 0.0, "grad_norm": 0.0})
        metrics.update(lr=lr, update_s=time.perf_counter() - t0, updates=steps, skipped_steps=skipped)
        self._train_mode(False)
        return metrics

    def train(self) -> TrainResult:
        log = self.calls.log or (lambda metrics, step: None)
        total = len(self.plan)
        lines = StepLines(f"train {self.method.name}", total, self.cfg.log_every) if self.calls.progress else None
        start, metrics, tokens, updates = time.perf_counter(), {}, 0, 0
        for iteration, prompt_index in enumerate(self.plan, start=1):
            want_logs = iteration == 1 or iteration % self.cfg.log_every == 0 or iteration == total
            metrics = self.iterate(iteration, prompt_index, want_logs)
            tokens += int(metrics["completion_tokens"])
            updates += metrics["updates"]
            if lines is not None:
                lines.update(iteration, metrics["loss"])
            if want_logs:
                metrics.update(tokens_seen=tokens, peak_memory_mb=peak_memory_mb(self.device))
                log({f"train/{k}": v for k, v in metrics.items()}, iteration)
        self._train_mode(False)
        log({"train/optimizer_steps": updates}, total)
        return TrainResult(total, tokens, time.perf_counter() - start, metrics)


def train_online(model, tokenizer, method: MethodEntry, params: dict, prompts: Prompts, cfg: TrainConfig,
                 reward, reference=None, callbacks: Callbacks | None = None, critic=None,
                 generator=None) -> TrainResult:
    """Train ``model`` (and ``critic``, a value model) in place on its own samples of ``prompts`` (see the
    module docstring); ``generator``: an engine that samples for it, synced before each rollout."""
    return OnlineTrainer(model, tokenizer, method, params, prompts, cfg, reward, reference, callbacks,
                         critic, generator).train()
