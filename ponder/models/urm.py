"""URM: the Universal Reasoning Model ("Universal Reasoning Model", arXiv 2512.14693), and the fixed-depth baseline.

A Universal Transformer on the TRM/HRM scaffolding: ONE stack of n_layers post-norm blocks (attention + ConvSwiGLU)
is shared across `loops` inner loops of one state h (official current_hidden). Each inner loop re-injects the
input embedding e and runs all blocks: h <- blocks(h + e). Truncated backpropagation through loops (TBPTL): the first
`no_grad_loops` loops run without gradient, the rest with it (official: the first (H_cycles-1) * L_cycles loops are
forward-only; the released scripts run 12 loops, 6 without grad). The state starts from a fixed random buffer
(official init_hidden) and is carried detached between supervision steps; deep supervision, halting and refilling
are the shared ACT loop of `ponder.act` (URM: 16 ACT steps, q_halt > 0, no continue loss).

Faithful to the official code: 1 puzzle-prefix position (puzzle_emb_len 1), bidirectional attention with RoPE,
ConvSwiGLU with a causal depthwise conv of kernel 2 (`ponder.models.layers`). Dense weights of the released
ARC config (hidden 512, 4 layers, vocab 12): 4 x 3,412,480 + 13,314 = 13,663,234 (reference ~13.6M; tests/test_urm.py).

`Transformer` is the fixed-depth baseline (official transformers_baseline Model_ACTV2): the same model with a
single loop carrying gradient, so "recursion vs depth" is one field (model.family).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from ponder.config import ModelConfig
from ponder.models.base import Recursive, StepOutput


@dataclass
class State:
    h: Tensor  # (B, P+L, D) hidden state (official current_hidden)


class URM(Recursive):
    State = State

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int = 1):
        # one shared stack (`blocks`, official layers); h_init = official init_hidden
        super().__init__(cfg, vocab_size, seq_len, num_puzzle_ids, networks=("blocks",), inits=("h_init",))

    def forward(self, state: State, inputs: Tensor, puzzle_ids: Tensor) -> StepOutput:
        e = self.embed(inputs, puzzle_ids)  # re-injected before every inner loop
        h = state.h
        with torch.no_grad():  # TBPTL: the leading loops are forward-only
            for _ in range(self.cfg.no_grad_loops):
                h = self.run(self.blocks, h, e)
        for _ in range(self.cfg.loops - self.cfg.no_grad_loops):
            h = self.run(self.blocks, h, e)
        return self.readout(State(h.detach()), h)


class Transformer(URM):
    """Fixed depth: n_layers blocks applied once per supervision step to (state + input embedding), no recursion.
    Run with n_supervision 1 for a plain Transformer; model.loops and model.no_grad_loops are ignored."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int = 1):
        super().__init__(dataclasses.replace(cfg, loops=1, no_grad_loops=0), vocab_size, seq_len, num_puzzle_ids)
