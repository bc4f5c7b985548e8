"""The method registry: name -> how a method trains.

A method plugs into the one offline loop through a ``MethodEntry``: which
batch it needs (``sft`` rows or preference ``pairs``), whether it needs
reference log-probs, its default learning rate, its own parameters with their
defaults, and its loss function.  The trainer never contains method math.

``params`` lists exactly the ``method.*`` keys the method uses; a spec that
sets any other ``method.*`` key is an error (DESIGN.md, "Contract: spec keys").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.losses import dpo_loss, sft_loss

SFT_PARAMS = {"loss_normalization": "token", "train_on_prompt": False, "assistant_turns": "all"}
PREFERENCE_PARAMS = {"beta": 0.1, "sft_weight": 0.0, "logprob_reduction": None}

# Learning-rate defaults follow TRL's trainers (DESIGN.md, train.lr).
SFT_LR, RM_LR, PREFERENCE_LR = 2e-5, 1e-5, 1e-6


@dataclass(frozen=True)
class MethodEntry:
    name: str
    batch_kind: str  # "sft" | "pairs" | "kto" | "rm"
    needs_ref: bool
    default_lr: float
    params: dict[str, Any]
    # Sequence log-prob reduction when method.logprob_reduction is null.
    default_reduction: str | None = None
    loss: Callable[..., Any] | None = field(default=None, compare=False)
    # The method.* params passed to ``loss`` as keywords (the rest are the loop's).
    loss_params: tuple[str, ...] = ()

    @property
    def implemented(self) -> bool:
        return self.loss is not None


def _sft(name: str, loss=None, **extra: Any) -> MethodEntry:
    return MethodEntry(name, "sft", False, SFT_LR, {**SFT_PARAMS, **extra}, loss=loss)


def _pref(name: str, reduction: str, loss=None, loss_params=(), needs_ref=True, kind="pairs", **extra):
    params = {**PREFERENCE_PARAMS, **extra}
    return MethodEntry(name, kind, needs_ref, PREFERENCE_LR, params, reduction, loss, tuple(loss_params))


METHODS: dict[str, MethodEntry] = {
    e.name: e
    for e in [
        _sft("sft", loss=sft_loss),
        _sft("dft"),
        _sft("iw-sft", weight_field="weight", tau=1.0, reward_model=None),
        _sft("hellinger-sft"),
        _sft("brier-sft"),
        MethodEntry("rm", "rm", False, RM_LR, {"pooling": "last", "center_rewards_coefficient": 0.0}),
        _pref("dpo", "sum", dpo_loss, ("beta", "label_smoothing"), label_smoothing=0.0),
        _pref("robust", "sum", label_smoothing=0.0),
        _pref("ipo", "mean"),
        _pref("hinge", "sum"),
        _pref("simpo", "mean", needs_ref=False, gamma=0.5),
        _pref("orpo", "mean", needs_ref=False, nll_on_prompt=False),
        _pref("kto", "sum", kind="kto", desirable_weight=1.0, undesirable_weight=1.0),
    ]
}
