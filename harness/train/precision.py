"""The autocast a stage trains under: one context for the policy's forward passes and for the reference pass.

``train.precision`` resolves to accelerate's ``mixed_precision`` (``harness.train.models.training_dtype``):
"no", "bf16" or "fp16", with fp32 master weights.  The loop runs every forward pass of the policy
under ``autocast(mixed_precision, device)``, and the reference statistics are computed under the very
same context, so a policy equal to its reference gives log-ratios of exactly 0 at step 0 in every
precision (as TRL, which computes its reference under the trainer's autocast).
"""

from __future__ import annotations

import contextlib

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(mixed_precision: str, device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to the dtype of ``mixed_precision`` on ``device``'s type; "no": no autocast.

    The same context accelerate's ``Accelerator.autocast()`` enters for these settings.
    """
    if mixed_precision == "no":
        return contextlib.nullcontext()
    if mixed_precision not in AUTOCAST_DTYPES:
        raise ValueError(f"mixed precision must be 'no' or one of {sorted(AUTOCAST_DTYPES)}, got {mixed_precision!r}")
    return torch.autocast(device_type=torch.device(device).type, dtype=AUTOCAST_DTYPES[mixed_precision])
