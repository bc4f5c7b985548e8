"""The reference pass: reference log-prob statistics of a stage's examples, from the cache or one no-grad pass.

The reference is ``stage.ref_model`` when set, else the stage's starting
policy (which, under LoRA, is exactly the adapter-disabled model: this runs
before the adapter is attached).  Statistics are cached in ``ReferenceCache``
(``cache/reflogps/``) by (reference model, policy and tokenizer, data and every
``data.*`` setting, max_length, batch kind, what is computed, the autocast), so
every trial that shares them reuses one pass.  The pass runs under the autocast
the stage trains under (``harness.train.precision``), as the policy's forward does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.cache import ReferenceCache, digest
from harness.data.load import fingerprint
from harness.methods import step_kl_pairs
from harness.methods.registry import METHODS
from harness.train.forward import kl_pair_logps, kto_reference_stats, reference_stats
from harness.train.inputs import PrepareContext
from harness.train.models import device, load_model, model_identity, resolve_model_path
from harness.train.plan import TrainConfig, step_batches
from harness.train.precision import autocast

Compute = Callable[[object, list, int, torch.device], torch.Tensor]


def data_fingerprint(stage) -> str:
    """A digest of the stage's train (and held-out) data contents."""
    uris = [stage.data.train] + ([stage.data.eval] if stage.data.eval else [])
    return digest([fingerprint(u) for u in uris], 16)


def reference_for(ctx: PrepareContext, examples: list, tag: str = "train", compute: Compute | None = None,
                  rows: int | None = None) -> torch.Tensor:
    """Reference statistics for ``examples``, from the cache or one no-grad pass (counted in ``ctx``).

    ``compute(model, examples, pad_id, device)`` makes them: by default
    ``reference_stats`` ([N, 4] per pair); KTO passes its own (``kto_references``),
    with ``rows`` the expected row count and ``tag`` naming what is computed.
    """
    stage = ctx.stage
    rows = len(examples) if rows is None else rows
    ref_path = resolve_model_path(stage.ref_model, ctx.cache_dir) if stage.ref_model else None
    ref_key = model_identity(ref_path) if ref_path else ctx.policy_key
    # Everything that decides the example list and its tokens: the policy's tokenizer (part of
    # policy_key), the data and every data.* setting, max_length; and the autocast it runs under.
    description = [ref_key, ctx.policy_key, data_fingerprint(stage), stage.data.model_dump(mode="json"),
                   stage.train.max_length, METHODS[stage.method.name].batch.name, tag,
                   {"mixed_precision": ctx.mixed_precision}]
    cache = ReferenceCache(ctx.cache_dir)
    with cache.lock(description):  # parallel trials with the same reference pass compute it once
        stats = None if ctx.force else cache.load(description, rows)
        if stats is not None:
            return stats
        ref_model = load_model(ref_path).to(device()) if ref_path else ctx.policy
        ref_model.eval()
        ctx.reference_passes += 1
        with autocast(ctx.mixed_precision, device()):  # the policy's precision (harness.train.precision)
            stats = (compute or reference_stats)(ref_model, examples, ctx.tokenizer.pad_token_id, device())
        cache.save(description, stats)
    return stats


def plan_kl_pairs(n: int, cfg: TrainConfig | None) -> list[tuple[int, int]]:
    """Every mismatched (prompt, completion) pair the KTO KL estimate will need, in a fixed order.

    ``cfg`` None: the held-out set as one step (validation).
    """
    steps = [list(range(n))] if cfg is None else [[i for mb in step for i in mb] for step in step_batches(n, cfg)]
    return sorted({pair for step in steps for pair in step_kl_pairs(step)})


def kto_references(ctx: PrepareContext, examples: list, cfg: TrainConfig | None,
                   tag: str) -> tuple[torch.Tensor, dict]:
    """KTO reference statistics: [N, 2] per example, and {(i, j): (sum, count)} per mismatched pair.

    The mismatched pairs follow the step plan, so the plan's settings are part of their cache key.
    """
    own = reference_for(ctx, examples, tag, kto_reference_stats)
    pairs = plan_kl_pairs(len(examples), cfg)
    plan = None if cfg is None else [cfg.seed, cfg.batch_size, cfg.grad_accum, cfg.epochs, cfg.max_steps, cfg.shuffle]

    def compute(model, examples_, pad_id, dev):
        return kl_pair_logps(model, examples_, pairs, pad_id, dev)

    stats = reference_for(ctx, examples, f"{tag}-kl-{digest(plan, 16)}", compute, rows=len(pairs))
    return own, dict(zip(pairs, stats.tolist()))
