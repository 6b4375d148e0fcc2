"""TRM: the Tiny Recursive Model ("Less is More: Recursive Reasoning with Tiny Networks", arXiv 2510.04871).

One small network f (2 post-norm blocks) is applied recursively to two states:
    x  embedded input (puzzle prefix + tokens, x sqrt(D))    official: input_embeddings
    y  current answer, decoded by the LM head                  official: z_H
    z  latent reasoning state                                  official: z_L
One *supervision step* = T recursions, each n latent updates z <- f(z, y + x) and one answer update y <- f(y, z).
The first T-1 recursions run under no_grad; only the last carries gradient (n + 1 calls of f). The returned state is
detached, so each supervision step is its own optimisation problem (deep supervision). The deep-supervision loop,
halting and refilling live in `ponder.act`; this file is one step of the model.

Faithful to the official code (ponder keeps its numbers):
- token embedding x sqrt(D); 16 prefix positions of which only the first holds the learned puzzle vector;
- RoPE over prefix + tokens, or none (TRM-MLP) or learned positions (scaled by 1/sqrt(2));
- TRM-MLP: a SwiGLU across the sequence replaces attention; the official code norms the result while still
  transposed (over the sequence axis) - kept behind `mlp_norm_quirk`;
- fixed random initial y and z (truncated normal buffers, not learned); Q-head on position 0 with zero weight, bias -5.
Weight counts (puzzle table excluded): TRM-MLP Sudoku 5,028,866; TRM-Att Sudoku 6,828,034 (tests/test_trm.py).
Ablations (config fields; TRM paper Sudoku table): `single_z` (official trm_singlez: one latent, z <- f(z + x)
n times then z <- f(z), answer read from z) and `act_continue` (HRM's Q-learning continue head, `ponder.act`).
The block, embedding, heads and initial states live in `ponder.models.base.Recursive`, shared with HRM and URM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ponder.config import ModelConfig
from ponder.models.base import Recursive, StepOutput


@dataclass
class State:
    y: Tensor  # (B, P+L, D) answer state (official z_H)
    z: Tensor  # (B, P+L, D) latent state (official z_L)


class TRM(Recursive):
    State = State

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int = 1):
        # one network f (`blocks`); y_init, z_init = official H_init, L_init
        super().__init__(cfg, vocab_size, seq_len, num_puzzle_ids, networks=("blocks",), inits=("y_init", "z_init"))

    def f(self, h: Tensor, injection: Tensor | float) -> Tensor:
        """The one network: blocks(h + injection). Official: L_level(hidden_states, input_injection)."""
        return self.run(self.blocks, h, injection)

    def recursion(self, x: Tensor, y: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """n latent updates z <- f(z, y + x), then the answer update y <- f(y, z)."""
        if self.cfg.single_z:  # official trm_singlez: z <- f(z + x) n times, then z <- f(z); the answer is z
            for _ in range(self.cfg.n_latent):
                z = self.f(z, x)
            z = self.f(z, 0.0)
            return z, z
        for _ in range(self.cfg.n_latent):
            z = self.f(z, y + x)
        return self.f(y, z), z

    def forward(self, state: State, inputs: Tensor, puzzle_ids: Tensor) -> StepOutput:
        x = self.embed(inputs, puzzle_ids)
        y, z = state.y, state.z
        with torch.no_grad():  # T-1 recursions without gradient (T = n_cycles, official H_cycles)
            for _ in range(self.cfg.n_cycles - 1):
                y, z = self.recursion(x, y, z)
        y, z = self.recursion(x, y, z)  # the last recursion carries gradient: n + 1 calls of f
        return self.readout(State(y.detach(), z.detach()), y)
