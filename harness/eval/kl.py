"""Sampled KL to the reference on a suite's generated outputs.

For outputs y_i ~ π(·|x_i), KL(π || π_ref) is estimated by the mean over
samples of log π(y_i|x_i) - log π_ref(y_i|x_i), each summed over the generated
tokens (EOS included, as it was generated): the "k1" Monte-Carlo estimator
(Schulman, "Approximating KL divergence", 2020).  It is unbiased for sampled
outputs; for greedy outputs it is the log-ratio of the greedy answers, not a KL.
"""

from __future__ import annotations

import torch

from harness.data.collate import collate_sft
from harness.data.tokenization import Encoded
from harness.methods.logprobs import sequence_logps, target_mask, token_logps

KL_ESTIMATOR = "k1"


@torch.no_grad()
def response_logps(model, sequences: list[tuple[list[int], list[int]]], pad_id: int,
                   batch_size: int = 16) -> torch.Tensor:
    """log p(response | prompt) summed over response tokens, per (prompt_ids, response_ids): [N] float32."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sequences), batch_size):
        chunk = [Encoded(list(p), list(r)) for p, r in sequences[start : start + batch_size]]
        batch = {k: v.to(device) for k, v in collate_sft(chunk, pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        tlp = token_logps(logits, batch["input_ids"])
        out.append(sequence_logps(tlp, target_mask(batch["loss_mask"]), "sum").float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


Segments = list[tuple[list[int], list[int]]]  # one sample: (prompt_ids, generated_ids) per turn


def sampled_kl(policy, reference, samples: list[Segments], pad_id: int) -> float:
    """k1 estimate: mean over samples of log π(y|x) - log π_ref(y|x) (0.0 for no samples).

    A multi-turn sample is several segments (each turn's prompt so far and its
    generated reply); its log-ratio is the sum over its segments.
    """
    flat = [seg for sample in samples for seg in sample]
    if not flat:
        return 0.0
    ratio = response_logps(policy, flat, pad_id) - response_logps(reference, flat, pad_id)
    owner = torch.tensor([i for i, sample in enumerate(samples) for _ in sample])
    per_sample = torch.zeros(len(samples)).index_add_(0, owner, ratio)
    return float(per_sample.mean())
