"""Value models of the online methods that learn a baseline (PPO's critic): V(s_t) per completion token.

``method.value_model``:
- ``separate``: a copy of the stage's *starting policy* with a new scalar head
  (``AutoModelForSequenceClassification``, as an ``rm`` stage builds one), run by its own forward.
  TRL initializes its value model from the reward model instead; the starting policy works for
  every reward source (a verifier has no weights) and gives the critic the policy's own features.
  Under LoRA it gets its own adapter of the stage's ``lora.rank`` (its head trains in full), so a
  LoRA stage never holds a second fully trainable backbone; without LoRA it trains in full.
- ``shared_head``: a new ``Linear(hidden, 1)`` on the policy's last hidden state, read from the
  policy's own forward pass, so value-loss gradients also reach the policy's backbone (or adapter).

Either way the value model's parameters join the policy's optimizer (one AdamW, one schedule, one
learning rate, one gradient clip over both), as TRL's PolicyAndValueWrapper trains them.  The value
of completion token t is read where the policy's logits predict it (``completion_columns``).  The
value model is not saved with the stage: its output is the policy.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig

from harness.errors import HarnessError
from harness.train.models import attach_lora, device
from harness.train.reward_model import load_reward_model, token_values
from harness.train.rollout import SequenceBatch, completion_columns


class SeparateValueModel:
    """A scalar-head LM of its own: values from its own forward pass over the rollout layout."""

    shares_forward = False  # the policy's forward need not return hidden states

    def __init__(self, model):
        self.model = model

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def values(self, batch: SequenceBatch, policy_output) -> torch.Tensor:
        """[B, L] values of the completion tokens' states (at least float32)."""
        v = token_values(self.model, batch.input_ids, batch.attention_mask, batch.position_ids)
        return completion_columns(v, batch)


class SharedValueHead:
    """A scalar head on the policy's last hidden state; the policy's forward must return hidden states."""

    shares_forward = True

    def __init__(self, hidden_size: int, initializer_range: float, dtype: torch.dtype, where):
        self.head = torch.nn.Linear(hidden_size, 1, dtype=dtype, device=where)
        # As transformers initializes a new sequence-classification head: N(0, initializer_range), bias 0.
        torch.nn.init.normal_(self.head.weight, std=initializer_range)
        torch.nn.init.zeros_(self.head.bias)

    def modules(self) -> list[torch.nn.Module]:
        return [self.head]

    def values(self, batch: SequenceBatch, policy_output) -> torch.Tensor:
        v = self.head(policy_output.hidden_states[-1]).squeeze(-1)
        return completion_columns(v.to(torch.promote_types(v.dtype, torch.float32)), batch)


def check_value_lora(kind: str, input_path: str, lora, key: str = "lora.rank") -> None:
    """A separate value model takes the stage's LoRA rank: no more than its hidden size (else an error)."""
    if kind != "separate" or lora.rank == 0:
        return
    hidden = getattr(AutoConfig.from_pretrained(input_path), "hidden_size", None)
    if hidden is not None and lora.rank > hidden:
        raise HarnessError(f"{key}: {lora.rank} is more than the hidden size {hidden} of the value model "
                           f"(method.value_model: separate, from {input_path}); use lora.rank <= {hidden}")


def build_value_model(kind: str, input_path: str, policy, pad_id: int, dtype: torch.dtype, lora, seed: int):
    """The stage's value model (see the module docstring); its new head is seeded by ``seed``."""
    torch.manual_seed(seed)
    if kind == "shared_head":
        config = policy.config
        return SharedValueHead(config.hidden_size, getattr(config, "initializer_range", 0.02), dtype,
                               next(policy.parameters()).device)
    check_value_lora(kind, input_path, lora)
    model = load_reward_model(input_path, pad_id, dtype).to(device())
    model = attach_lora(model, lora.rank, lora.alpha, lora.dropout, lora.target_modules, "SEQ_CLS")
    return SeparateValueModel(model)
