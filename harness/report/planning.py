"""Where a level's noise comes from, and what a design of prompts x seeds can detect (issue 13).

A level's per-prompt scores form a (seeds S, prompts P) table x[s, i].  Its
variance components, by the method of moments of a two-way layout without
replication (Searle, Casella & McCulloch 1992, ch. 4):

- residual σ²_res: the seed x prompt interaction mean square (it holds the
  sampling noise of decoding and of the judge);
- seed σ²_seed = var(seed means) - σ²_res/P;
- prompt σ²_prompt = var(prompt means) - σ²_res/S;

each floored at 0.  With one seed, the seed and residual parts cannot be told
apart: σ²_prompt is the variance over prompts (sampling noise included) and
σ²_seed is unknown.

Planning a difference between two levels on P shared prompts and S seeds each
uses Var(D) = 2σ²_seed/S + (σ²_int + 2σ²_res/S)/P, with σ²_int the prompt x
level interaction (the variance of per-prompt differences beyond the residual).
The minimum detectable effect at two-sided α and power 1 - β is
(z_{1-α/2} + z_{1-β}) · √Var(D) (normal approximation); with σ²_seed = σ²_int = 0
and S = 1 it is the two-sample mean's (z_{1-α/2} + z_{1-β}) · σ √(2/n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from harness.report.stats import residual_variance, seed_variance

ALPHA, POWER = 0.05, 0.80


@dataclass(frozen=True)
class Components:
    seeds: int
    prompts: int
    prompt: float
    seed: float  # NaN with one seed
    residual: float  # NaN with one seed


def components(x) -> Components:
    """Variance components of a (seeds, prompts) table of per-prompt scores."""
    x = np.asarray(x, float)
    s, p = x.shape
    if s < 2:
        return Components(s, p, float(x[0].var(ddof=1)) if p > 1 else math.nan, math.nan, math.nan)
    res = residual_variance(x)
    prompt = max(0.0, float(x.mean(axis=0).var(ddof=1)) - res / s)
    return Components(s, p, prompt, seed_variance(x), res)


def z_sum(alpha: float = ALPHA, power: float = POWER) -> float:
    """z_{1-α/2} + z_{power}: 1.960 + 0.842 = 2.802 at the defaults."""
    return float(special.ndtri(1 - alpha / 2) + special.ndtri(power))


@dataclass(frozen=True)
class Design:
    """The measured noise of a difference: per-seed (σ²_seed), per prompt (σ²_int) and residual (σ²_res)."""

    seed: float
    interaction: float
    residual: float

    def variance(self, seeds: int, prompts: int) -> float:
        """Var(D) = 2σ²_seed/S + (σ²_int + 2σ²_res/S)/P."""
        return 2 * self.seed / seeds + (self.interaction + 2 * self.residual / seeds) / prompts

    def mde(self, seeds: int, prompts: int) -> float:
        return z_sum() * math.sqrt(self.variance(seeds, prompts))

    def prompts_needed(self, effect: float, seeds: int) -> float:
        """Smallest P with mde(S, P) <= effect at these seeds; inf when the seed term alone exceeds it."""
        room = (effect / z_sum()) ** 2 - 2 * self.seed / seeds
        return math.ceil((self.interaction + 2 * self.residual / seeds) / room) if room > 0 else math.inf

    def seeds_needed(self, effect: float, prompts: int) -> float:
        """Smallest S with mde(S, P) <= effect at these prompts; inf when the prompt term alone exceeds it."""
        room = (effect / z_sum()) ** 2 - self.interaction / prompts
        return math.ceil((2 * self.seed + 2 * self.residual / prompts) / room) if room > 0 else math.inf


def design(a, r) -> Design:
    """The ``Design`` of two levels' (seeds, prompts) tables on the same prompts (seed parts averaged).

    With one seed on a side, σ²_seed is unknown and taken as 0 (the plan is then
    conditional on the checkpoints, like the interval) and the residual is folded
    into the per-prompt term.
    """
    a, r = np.asarray(a, float), np.asarray(r, float)
    ca, cr = components(a), components(r)
    per_prompt = float((a.mean(axis=0) - r.mean(axis=0)).var(ddof=1))
    if math.isnan(ca.seed) or math.isnan(cr.seed):
        return Design(0.0, per_prompt, 0.0)
    residual = (ca.residual + cr.residual) / 2
    interaction = max(0.0, per_prompt - residual * (1 / len(a) + 1 / len(r)))
    return Design((ca.seed + cr.seed) / 2, interaction, residual)
