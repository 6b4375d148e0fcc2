"""HRM: the Hierarchical Reasoning Model ("Hierarchical Reasoning Model", arXiv 2506.21734; code sapientinc/HRM).

Two networks of n_layers post-norm blocks each (paper: 4 + 4) at two time scales:
    x    embedded input (1 puzzle-prefix position + tokens, x sqrt(D))
    z_H  slow high-level state, decoded by the LM and Q heads        official: z_H, H_level
    z_L  fast low-level state                                        official: z_L, L_level
One supervision step = H_cycles high-level updates, each after L_cycles low-level ones:
    z_L <- L(z_L, z_H + x)  (L_cycles times);  z_H <- H(z_H, z_L)      with net(h, inj) = blocks(h + inj).
"1-step gradient" (the paper's implicit-function-theorem approximation): everything runs under no_grad except the
very last L call and the very last H call; `one_step_grad=False` backpropagates through the whole last H cycle
(its L_cycles L calls + the H call). The returned state is detached (deep supervision, `ponder.act`).
HRM trains a Q-learning continue head (`act_continue`, on in the paper recipe): halt when q_halt > q_continue.
Embedding, heads, RoPE and the fixed initial states are TRM's (`ponder.models.base.Recursive`; TRM forked HRM's code).
Weight counts (puzzle table excluded): Sudoku 27,275,266; ARC 27,276,290 (tests/test_hrm.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ponder.config import ModelConfig
from ponder.models.base import Recursive, StepOutput


@dataclass
class HRMState:
    z_h: Tensor  # (B, P+L, D) high-level state (official z_H), read out by the heads
    z_l: Tensor  # (B, P+L, D) low-level state (official z_L)


class HRM(Recursive):
    State = HRMState

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int = 1):
        super().__init__(cfg, vocab_size, seq_len, num_puzzle_ids, networks=("H_level", "L_level"),
                         inits=("H_init", "L_init"))

    def f_H(self, z_h: Tensor, z_l: Tensor) -> Tensor:
        """High-level update: H_level blocks(z_H + z_L)."""
        return self.run(self.H_level, z_h, z_l)

    def f_L(self, z_l: Tensor, injection: Tensor) -> Tensor:
        """Low-level update: L_level blocks(z_L + injection), injection = z_H + x."""
        return self.run(self.L_level, z_l, injection)

    def forward(self, state: HRMState, inputs: Tensor, puzzle_ids: Tensor) -> StepOutput:
        H, L = self.cfg.n_cycles, self.cfg.n_latent  # official H_cycles, L_cycles
        grad_l = 1 if self.cfg.one_step_grad else L  # L calls at the end that carry gradient
        x = self.embed(inputs, puzzle_ids)
        z_h, z_l = state.z_h, state.z_l
        with torch.no_grad():
            for h in range(H):
                for i in range(L):
                    if h < H - 1 or i < L - grad_l:
                        z_l = self.f_L(z_l, z_h + x)
                if h < H - 1:
                    z_h = self.f_H(z_h, z_l)
        for _ in range(grad_l):  # with gradient: the last L call(s), then the last H call
            z_l = self.f_L(z_l, z_h + x)
        z_h = self.f_H(z_h, z_l)
        return self.readout(HRMState(z_h.detach(), z_l.detach()), z_h)
