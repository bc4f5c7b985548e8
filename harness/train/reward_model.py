"""Reward models: an LM backbone plus a scalar head, trained with ``rm_loss``, used later as a reward source.

The model is ``AutoModelForSequenceClassification`` with one label, so a saved
RM is an ordinary transformers checkpoint.  Harness applies the head to every
position and pools over response tokens itself (``pool_rewards``), so both
``pooling: last`` and ``mean`` work; the pooling is saved in the model config
(``harness_pooling``) and honoured when the RM scores data later.
"""

from __future__ import annotations

import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoModelForSequenceClassification

from harness.data.collate import collate_pairs, right_pad
from harness.errors import HarnessError
from harness.methods import PairRewards, pool_rewards
from harness.train.inputs import BatchInputs


def check_reward_model(path: str, what: str) -> None:
    """Raise a HarnessError naming ``what`` unless ``path`` holds a reward model.

    A reward model is a checkpoint saved by an ``rm`` stage (``harness_pooling``
    in its config) or any one-label ``*ForSequenceClassification`` model.  A
    plain LM would load too, with a fresh random head, so it is refused here.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{what}: {path!r}: cannot read a model config ({exc})") from exc
    architectures = list(getattr(config, "architectures", None) or [])
    if getattr(config, "harness_pooling", None) is not None:
        return
    if any(a.endswith("ForSequenceClassification") for a in architectures) and config.num_labels == 1:
        return
    raise HarnessError(f"{what}: {path!r} is not a reward-model checkpoint (its config has architectures "
                       f"{architectures}, num_labels {config.num_labels} and no harness_pooling); give a "
                       "directory saved by an rm stage or a one-label *ForSequenceClassification model")


def load_reward_model(path: str, pad_id: int, dtype: torch.dtype = torch.float32, pooling: str | None = None):
    """A one-output sequence-classification model from ``path`` (an LM or a saved RM).

    A new scalar head is initialized from the current torch seed.  ``pooling``
    (when given) is recorded in the config for later scoring.
    """
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise HarnessError(f"model {path!r}: cannot load as a reward model ({exc})") from exc
    model.config.pad_token_id = pad_id
    if pooling is not None:
        model.config.harness_pooling = pooling
    return model


def _head(model):
    # DDP keeps the model in .module; peft's wrapper forwards attribute reads to the model it wraps.
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    head = getattr(inner, "score", None) or getattr(inner, "classifier", None)
    if head is None:
        raise HarnessError(f"{type(inner).__name__}: no scalar head ('score' or 'classifier') to train as an RM")
    return head


def token_values(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The scalar head at every position: [B, T] ids and mask (and positions) -> [B, T] values (at least float32).

    The final hidden states come from the model's own forward (``output_hidden_states``), so the
    pass runs through whatever wraps the model: peft's adapter (whose ``base_model`` returns the
    pooled classifier output, not hidden states) and DDP (whose forward arms the gradient sync).
    The head is then applied to every position; transformers' forward applies it too, but pools.
    """
    extra = {} if position_ids is None else {"position_ids": position_ids}
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **extra)
    values = _head(model)(out.hidden_states[-1]).squeeze(-1)
    return values.to(torch.promote_types(values.dtype, torch.float32))


def forward_rm(model, method, params: dict, examples: list, inputs: BatchInputs, pad_id: int, device,
               with_entropy: bool = False):
    """One micro-batch of pairs: (per-example rm_loss numerators [B], metrics, input tokens); no entropy."""
    batch = {k: v.to(device) for k, v in collate_pairs(examples, pad_id).items()}
    values = token_values(model, batch["input_ids"], batch["attention_mask"])
    rewards = pool_rewards(values, batch["loss_mask"], params["pooling"])
    n = len(examples)
    margin = inputs.margins
    margin = margin.to(device=device, dtype=rewards.dtype) if margin is not None else None
    numerators, metrics = method.loss(PairRewards(rewards[:n], rewards[n:], margin), **method.loss_kwargs(params))
    metrics["response_length"] = batch["loss_mask"].sum(-1).float().mean()
    return numerators, metrics, int(batch["attention_mask"].sum())


@torch.no_grad()
def score_responses(model, prompts: list[list[int]], responses: list[list[int]], pad_id: int, device,
                    batch_size: int = 16) -> torch.Tensor:
    """Rewards [N] of prompt + response token sequences, pooled as the RM was trained."""
    pooling = getattr(model.config, "harness_pooling", "last")
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(zip(prompts[start : start + batch_size], responses[start : start + batch_size]))
        ids = right_pad([p + r for p, r in chunk], pad_id).to(device)
        attention = right_pad([[1] * (len(p) + len(r)) for p, r in chunk], 0).to(device)
        mask = right_pad([[0] * len(p) + [1] * len(r) for p, r in chunk], 0).to(device)
        out.append(pool_rewards(token_values(model, ids, attention), mask, pooling).double().cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
