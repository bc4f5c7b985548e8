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

from harness.methods import (
    brier_sft_loss,
    dft_loss,
    dpo_loss,
    hellinger_sft_loss,
    hinge_loss,
    ipo_loss,
    iw_sft_loss,
    kto_loss,
    orpo_loss,
    rm_loss,
    robust_loss,
    sft_loss,
    simpo_loss,
)

SFT_PARAMS = {"loss_normalization": "token", "train_on_prompt": False, "assistant_turns": "all"}
PREFERENCE_PARAMS = {"beta": 0.1, "sft_weight": 0.0, "logprob_reduction": None}

KL_K1_RESPONSES = ("k1 on the dataset responses: batch mean over chosen and rejected of "
                   "sum_t (log pi - log pi_ref)")
KL_KTO_Z0 = ("kto z0: max(0, mean over the step's mismatched prompt/completion pairs of "
             "log pi - log pi_ref), detached")

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
    # Extra keyword inputs the forward pass computes for ``loss``: "sum_sq_probs" (brier),
    # "weights" (iw-sft), "nll_chosen" (orpo).
    extra_inputs: tuple[str, ...] = ()

    @property
    def kl_estimator(self) -> str | None:
        """What ``train/kl`` estimates for this method (the ``harness.kl_estimator`` tag), or None."""
        if self.batch_kind == "kto":
            return KL_KTO_Z0
        return KL_K1_RESPONSES if self.needs_ref and self.batch_kind == "pairs" else None

    @property
    def implemented(self) -> bool:
        return self.loss is not None


def _sft(name: str, loss=None, extra_inputs=(), **extra: Any) -> MethodEntry:
    return MethodEntry(name, "sft", False, SFT_LR, {**SFT_PARAMS, **extra}, loss=loss,
                       extra_inputs=tuple(extra_inputs))


def _pref(name: str, reduction: str, loss=None, loss_params=(), needs_ref=True, kind="pairs",
          extra_inputs=(), **extra):
    params = {**PREFERENCE_PARAMS, **extra}
    return MethodEntry(name, kind, needs_ref, PREFERENCE_LR, params, reduction, loss, tuple(loss_params),
                       tuple(extra_inputs))


METHODS: dict[str, MethodEntry] = {
    e.name: e
    for e in [
        _sft("sft", loss=sft_loss),
        _sft("dft", loss=dft_loss),
        _sft("iw-sft", loss=iw_sft_loss, weight_field="weight", tau=1.0, reward_model=None),
        _sft("hellinger-sft", loss=hellinger_sft_loss),
        _sft("brier-sft", loss=brier_sft_loss, extra_inputs=("sum_sq_probs",)),
        MethodEntry("rm", "rm", False, RM_LR, {"pooling": "last", "center_rewards_coefficient": 0.0},
                    loss=rm_loss),
        _pref("dpo", "sum", dpo_loss, ("beta", "label_smoothing"), label_smoothing=0.0),
        _pref("robust", "sum", robust_loss, ("beta", "label_smoothing"), label_smoothing=0.0),
        _pref("ipo", "mean", ipo_loss, ("beta",)),
        _pref("hinge", "sum", hinge_loss, ("beta",)),
        _pref("simpo", "mean", simpo_loss, ("beta", "gamma"), needs_ref=False, gamma=0.5),
        _pref("orpo", "mean", orpo_loss, ("beta",), needs_ref=False, extra_inputs=("nll_chosen",),
              nll_on_prompt=False),
        _pref("kto", "sum", kto_loss, ("beta", "desirable_weight", "undesirable_weight"), kind="kto",
              desirable_weight=1.0, undesirable_weight=1.0),
    ]
}
