"""Per-token Adaptive Computation Time (Graves 2016, arXiv 1603.08983), as the 1dCA study puts it on its sequence
models (the reference's `modeling_amt/act_utils.py`; ../shared/reference/ca1d.md section 5a).

A `Halting` unit repeats a function f (one layer, or the whole stack) on the hidden states, token by token:
- before hop n a token's halting probability is p_n = sigmoid(w . h_n + b), the bias initialised to 1;
- it halts at the first hop where its cumulative probability would exceed `act_threshold` (0.9), or at `act_max_hop`;
  that hop gets the remainder R = 1 - (sum of the earlier p), every earlier hop its p, so the weights sum to 1;
- the output is the weighted sum of the hop states f(h), f(f(h)), ...; tokens that halted keep their output while
  the others go on (a hop runs on every token; halted ones get weight 0);
- the ponder cost is the mean remainder; the model adds act_penalty x cost to the loss (the reference's
  time_penalty x mean remainder);
- `act_noise` > 0 adds Gaussian noise to p in training (the reference's noisy halting); `act_halting=constant`
  runs exactly act_max_hop hops with no halting unit (the reference's constant-depth "CD" variant).
The reference code (tensor2tensor's Universal Transformer form) mixes the hops by running interpolation,
h <- w f(h) + (1 - w) h, and gives tokens stopped by max_hop no remainder, so their weights sum to less than 1;
this is Graves' weighted sum with the remainder on the last hop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ponder.config import ModelConfig

Step = Callable[[Tensor, bool], Tensor]  # f(h, final): final = no token continues after this hop (ARMT writes then)


class Halting(nn.Module):
    def __init__(self, d: int, cfg: ModelConfig):
        super().__init__()
        self.constant = cfg.act_halting == "constant"
        self.max_hop, self.threshold, self.noise = cfg.act_max_hop, cfg.act_threshold, cfg.act_noise
        if not self.constant:
            self.p = nn.Linear(d, 1)
            with torch.no_grad():
                self.p.bias.fill_(1.0)
        self.remainder: Tensor | None = None  # (B, T) of the last call
        self.hops: Tensor | None = None  # (B, T) hops each token took in the last call

    def forward(self, f: Step, h: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D)
        b, t = h.shape[:2]
        if self.constant:
            for n in range(self.max_hop):
                h = f(h, n == self.max_hop - 1)
            self.remainder = h.new_zeros(b, t, dtype=torch.float32)
            self.hops = h.new_full((b, t), float(self.max_hop), dtype=torch.float32)
            return h
        cum = h.new_zeros(b, t, dtype=torch.float32)  # sum of the p of the hops a running token has taken
        remainder, hops = torch.zeros_like(cum), torch.zeros_like(cum)
        running = torch.ones_like(cum, dtype=torch.bool)
        out = torch.zeros_like(h)
        for n in range(self.max_hop):
            p = torch.sigmoid(self.p(h)).squeeze(-1).float()  # (B, T), from the state before this hop
            if self.noise and self.training:
                p = p + torch.randn_like(p) * self.noise
            halt = running & ((cum + p > self.threshold) | (n == self.max_hop - 1))
            weight = torch.where(halt, 1 - cum, torch.where(running, p, torch.zeros_like(p)))
            remainder = torch.where(halt, 1 - cum, remainder)
            hops = hops + running.float()
            cum = cum + torch.where(running & ~halt, p, torch.zeros_like(p))
            running = running & ~halt
            last = not bool(running.any())
            h = f(h, last)
            out = out + weight.unsqueeze(-1).to(h.dtype) * h
            if last:
                break
        self.remainder, self.hops = remainder, hops
        return out


class AdaptiveLayer(nn.Module):
    """model.act=layer: one layer repeated adaptively; called like the layer (extra arguments passed to each hop)."""

    def __init__(self, layer: nn.Module, d: int, cfg: ModelConfig):
        super().__init__()
        self.layer, self.halting = layer, Halting(d, cfg)

    def forward(self, h: Tensor, *args, **kwargs) -> Tensor:
        return self.halting(lambda x, final: self.layer(x, *args, **kwargs), h)


class AdaptiveStack(nn.Module):
    """model.act=model: the whole stack iterated adaptively; each hop runs every layer in order. `before_hop(final)`
    is told before each hop whether it is the last (ARMT writes its memories on the final hop only)."""

    def __init__(self, layers: nn.ModuleList, d: int, cfg: ModelConfig,
                 before_hop: Callable[[bool], None] | None = None):
        super().__init__()
        self.layers, self.halting, self.before_hop = layers, Halting(d, cfg), before_hop

    def forward(self, h: Tensor, *args, **kwargs) -> Tensor:
        def hop(x: Tensor, final: bool) -> Tensor:
            if self.before_hop is not None:
                self.before_hop(final)
            for layer in self.layers:
                x = layer(x, *args, **kwargs)
            return x

        return self.halting(hop, h)


def adaptive(layers: nn.ModuleList, d: int, cfg: ModelConfig,
             before_hop: Callable[[bool], None] | None = None) -> tuple[nn.ModuleList, list[Halting]]:
    """The layers as model.act asks: unchanged (off), each wrapped (layer) or iterated as one (model); and the
    halting units whose remainders and hops the model reports."""
    if cfg.act == "layer":
        wrapped = nn.ModuleList(AdaptiveLayer(layer, d, cfg) for layer in layers)
        return wrapped, [w.halting for w in wrapped]
    if cfg.act == "model":
        stack = AdaptiveStack(layers, d, cfg, before_hop)
        return nn.ModuleList([stack]), [stack.halting]
    return layers, []
