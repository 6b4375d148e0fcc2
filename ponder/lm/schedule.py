"""Depth schedules of retrofitted recurrence (reference section 2.3, from Huginn's and the retrofit `train.py`).

- `sample_depth`: the per-step number of recurrences, Poisson-log-normal:
      tau ~ LogNormal(mu, sigma = 0.5),  mu = ln(r_bar) - sigma^2 / 2   (so E[tau] = r_bar)
      p   = Poisson(tau) + 1                                             (so E[p]   = r_bar + 1)
  The last k = min(p, b) iterations carry gradient, the first n = p - k run without it (truncated backprop), where
  b = min(backprop_depth, r_bar) (official `mean_backprop_depth` = 8, clamped to the current r_bar).
  The draw is a pure function of (seed, step): a fresh generator seeded with `seed + step` (official seed 514229),
  so every micro-batch of a step uses the same depth and a resumed run draws the same depths.
- `mean_recurrence_at`: the curriculum on r_bar. The official code drives a dummy optimiser through HF's
  `warmup_stable_decay` with r_bar as its "lr"; written out here:
      r_bar_t = max(1, ceil(max_mean * f(t / T_warm)))  for t < T_warm,  max_mean afterwards,
  T_warm = fraction * total steps, f(u) = u ("linear") or 1 - sqrt(1 - u) ("1-sqrt": slow first, fast later).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

OFFICIAL_SEED = 514229  # the retrofit/Huginn depth seed: step t draws from a generator seeded with 514229 + t
SIGMA = 0.5  # log-normal sigma of the official sampler


@dataclass(frozen=True)
class Depth:
    """Recurrences of one training step: n forward-only, then k with gradient (num_steps = n + k = p)."""

    n: int  # no-grad iterations
    k: int  # gradient iterations (the last ones)
    tau: float  # the log-normal rate this draw used (logged; E[tau] = r_bar)

    @property
    def total(self) -> int:
        return self.n + self.k


def sample_depth(mean_recurrence: float, backprop_depth: int, step: int, seed: int = OFFICIAL_SEED) -> Depth:
    """One Poisson-log-normal depth draw for optimiser step `step`, deterministic in (seed, step)."""
    assert mean_recurrence >= 1 and backprop_depth >= 1, (mean_recurrence, backprop_depth)
    gen = torch.Generator().manual_seed(seed + step)
    mu = math.log(mean_recurrence) - SIGMA**2 / 2
    tau = torch.empty(1, dtype=torch.float64).log_normal_(mu, SIGMA, generator=gen)
    p = int(torch.poisson(tau, generator=gen).item()) + 1
    b = int(min(backprop_depth, mean_recurrence))  # official: b = r_bar when r_bar < mean_backprop_depth
    k = min(p, b)
    return Depth(n=p - k, k=k, tau=float(tau.item()))


def curriculum_shape(u: float, shape: str) -> float:
    """f(u) on [0, 1]: "linear" u, or "1-sqrt" 1 - sqrt(1 - u) (HF warmup_stable_decay's warmup types)."""
    if shape == "linear":
        return u
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(1.0 - u)
    raise ValueError(f"unknown curriculum shape {shape!r} (linear or 1-sqrt)")


def mean_recurrence_at(step: int, max_mean: int, total_steps: int, fraction: float, shape: str) -> int:
    """r_bar for the optimiser step after `step` completed ones (0-based, as HF schedulers count)."""
    warm = int(fraction * total_steps)  # T_warm; 0 = no curriculum, r_bar = max_mean from the start
    if step >= warm:
        return max_mean
    return max(1, math.ceil(max_mean * curriculum_shape(step / warm, shape)))
