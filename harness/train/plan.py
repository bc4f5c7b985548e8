"""The step plan: the resolved ``train.*`` settings and which examples each optimizer step and micro-batch sees.

The plan is fixed before training (a seeded permutation per epoch), so the
inputs that depend on it, such as KTO's mismatched KL pairs, can be computed
and cached up front.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
