"""The train-side hooks of each batch kind: how its rows are encoded, its inputs prepared, its steps run.

``harness.methods.registry`` says what a batch kind *is* (pure facts: its rows,
its normalization, its flags); ``HOOKS`` says how the offline loop runs one,
keyed by the ``BatchKind`` record, so no code compares a kind's name:

- ``encode(stage)``: an ``Encoder``, ``encoder(tokenizer, rows) -> (examples, TokenStats)``;
- ``prepare(ctx, examples, cfg, tag)``: the ``ExampleSet`` with every
  per-example input the method needs (reference statistics, KTO KL pairs,
  IW-SFT log-weights, RM margins), ``cfg`` None for a held-out set;
- ``step(...)``: the batch-relative inputs of one optimizer step;
- ``forward(...)``: one micro-batch -> (per-example loss numerators, metrics, tokens).

A method with a new batch kind adds a ``BatchKind`` to the registry, its
record to ``harness.methods.batches``, its loss, and one ``KindHooks`` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.data.load import pairs_to_kto
from harness.data.tokenization import encode_kto, encode_pairs, encode_sft
from harness.errors import HarnessError
from harness.methods.registry import KTO, METHODS, PAIRS, RM, SFT, BatchKind, MethodEntry
from harness.train.forward import (
    forward_kto,
    forward_pairs,
    forward_sft,
    kto_step_inputs,
    pair_layout,
    reference_stats,
)
from harness.train.inputs import (
    BatchInputs,
    ExampleSet,
    PrepareContext,
    example_margins,
    no_step_inputs,
    weighted_step_inputs,
)
from harness.train.models import device, load_tokenizer, resolve_model_path
from harness.train.plan import TrainConfig
from harness.train.reference import kto_references, reference_for
from harness.train.reward_model import check_reward_model, forward_rm, load_reward_model, score_responses


@dataclass(frozen=True)
class Encoder:
    """A stage's row encoder: ``encoder(tokenizer, rows) -> (examples, TokenStats)`` is
    ``encode(tokenizer, rows, **settings)``.  ``settings`` holds every stage setting the encoding reads,
    so ``key`` tells two stages whose rows encode alike (the in-process data memo, ``harness.train.stages``)."""

    encode: Callable
    settings: dict

    def __call__(self, tokenizer, rows: list):
        return self.encode(tokenizer, rows, **self.settings)

    def key(self) -> list:
        return [f"{self.encode.__module__}.{self.encode.__qualname__}", self.settings]


def _limits(stage) -> dict:
    return {"max_length": stage.train.max_length, "max_prompt_length": stage.data.max_prompt_length,
            "truncation": stage.data.truncation}


def encode_sft_rows(stage) -> Encoder:
    """SFT rows, with their importance weights when the method reads a weight field."""
    field = METHODS[stage.method.name].weight_field(stage.method.params)
    turns = stage.method.params["assistant_turns"]
    return Encoder(encode_sft, {**_limits(stage), "assistant_turns": turns, "weight_field": field})


def _encode_kto_or_pairs(tokenizer, rows: list, **limits):
    return encode_kto(tokenizer, pairs_to_kto(rows), **limits)


def encode_kto_rows(stage) -> Encoder:
    """KTO rows, or pairs (each pair gives a desirable and an undesirable row)."""
    return Encoder(_encode_kto_or_pairs, _limits(stage))


def encode_pair_rows(stage) -> Encoder:
    return Encoder(encode_pairs, _limits(stage))


def example_log_weights(ctx: PrepareContext, examples: list) -> torch.Tensor:
    """IW-SFT log-weights [N]: log of the data field, or r / tau from ``method.reward_model``."""
    params = ctx.stage.method.params
    if params.get("reward_model") is None:
        return torch.tensor([ex.weight for ex in examples], dtype=torch.float64).log()
    path = resolve_model_path(params["reward_model"], ctx.cache_dir)
    check_reward_model(path, "method.reward_model")
    tokenizer = ctx.tokenizer
    if load_tokenizer(path).get_vocab() != tokenizer.get_vocab():
        raise HarnessError(f"method.reward_model: {params['reward_model']!r} has a different tokenizer than the "
                           "policy; an IW-SFT reward model must share the policy's tokenizer")
    rm = load_reward_model(path, tokenizer.pad_token_id).to(device()).eval()
    ctx.reward_passes += 1
    rewards = score_responses(rm, [ex.prompt_ids for ex in examples], [ex.response_ids for ex in examples],
                              tokenizer.pad_token_id, device())
    return rewards / params["tau"]


def prepare_sft(ctx: PrepareContext, examples: list, cfg: TrainConfig | None, tag: str) -> ExampleSet:
    data = ExampleSet(examples, ctx.tokenizer.pad_token_id)
    if METHODS[ctx.stage.method.name].importance_weighted and examples:
        data.log_weights = example_log_weights(ctx, examples)
    return data


def prepare_pairs(ctx: PrepareContext, examples: list, cfg: TrainConfig | None, tag: str) -> ExampleSet:
    data = ExampleSet(examples, ctx.tokenizer.pad_token_id)
    if METHODS[ctx.stage.method.name].needs_ref:
        layout = pair_layout(ctx.policy, ctx.stage.train.pair_forward)
        # The layouts agree to rounding, not bit for bit: a shared_prompt entry is its own (padded keeps its old key).
        key = tag if layout == "padded" else f"{tag}:{layout}"
        data.ref = reference_for(ctx, examples, key,
                                 lambda model, examples_, pad_id, dev: reference_stats(model, examples_, pad_id, dev,
                                                                                       layout=layout))
    return data


def prepare_kto(ctx: PrepareContext, examples: list, cfg: TrainConfig | None, tag: str) -> ExampleSet:
    data = ExampleSet(examples, ctx.tokenizer.pad_token_id)
    data.ref, data.kl_ref = kto_references(ctx, examples, cfg, tag)
    return data


def prepare_rm(ctx: PrepareContext, examples: list, cfg: TrainConfig | None, tag: str) -> ExampleSet:
    return ExampleSet(examples, ctx.tokenizer.pad_token_id, margins=example_margins(examples))


@dataclass(frozen=True)
class KindHooks:
    """How the offline loop runs one batch kind (signatures in the module docstring)."""

    encode: Callable[[object], Encoder]
    prepare: Callable[[PrepareContext, list, TrainConfig | None, str], ExampleSet]
    step: Callable
    forward: Callable


HOOKS: dict[BatchKind, KindHooks] = {
    SFT: KindHooks(encode_sft_rows, prepare_sft, weighted_step_inputs, forward_sft),
    PAIRS: KindHooks(encode_pair_rows, prepare_pairs, no_step_inputs, forward_pairs),
    KTO: KindHooks(encode_kto_rows, prepare_kto, kto_step_inputs, forward_kto),
    RM: KindHooks(encode_pair_rows, prepare_rm, no_step_inputs, forward_rm),
}


def hooks(method: MethodEntry) -> KindHooks:
    return HOOKS[method.batch]


def forward_method(model, method: MethodEntry, params: dict, examples: list, pad_id: int, dev,
                   inputs: BatchInputs | None = None, with_entropy: bool = False):
    """One micro-batch of any method: (per-example loss numerators [B], detached metrics, input tokens).

    ``inputs`` holds the micro-batch's reference statistics and step inputs (``harness.train.inputs``).
    """
    return hooks(method).forward(model, method, params, examples, inputs or BatchInputs(), pad_id, dev,
                                 with_entropy)
