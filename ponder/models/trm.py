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
The embedding, heads and initial states live in `Recursive`, shared with HRM and URM (`ponder.models.hrm`, `.urm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ponder.config import ModelConfig
from ponder.models.layers import (Attention, Rotary, SparseEmbedding, SwiGLU, feed_forward, linear, rms_norm,
                                  trunc_normal_)


@dataclass
class State:
    y: Tensor  # (B, P+L, D) answer state (official z_H)
    z: Tensor  # (B, P+L, D) latent state (official z_L)


@dataclass
class StepOutput:
    state: State  # detached state to carry into the next supervision step
    logits: Tensor  # (B, L, V) answer logits (prefix positions removed)
    q_halt: Tensor  # (B,) float32 halting logit; halt when > 0
    q_continue: Tensor | None = None  # (B,) only for models trained with the ACT continue target (HRM)


class Block(nn.Module):
    """Post-norm: h <- norm(h + mixer(h)); h <- norm(h + SwiGLU(h)). URM: ConvSwiGLU or a conv in attention."""

    def __init__(self, cfg: ModelConfig, total_len: int):
        super().__init__()
        self.cfg = cfg
        if cfg.mixer == "attention":
            self.attn = Attention.from_config(cfg)
        else:  # TRM-MLP: mixes positions with a SwiGLU over the sequence axis (official mlp_t)
            self.mlp_t = SwiGLU(total_len, cfg.expansion)
        self.mlp = feed_forward(cfg)

    def forward(self, h: Tensor, rotary: Rotary | None) -> Tensor:  # (B, S, D) -> (B, S, D)
        eps = self.cfg.norm_eps
        if self.cfg.mixer == "attention":
            h = rms_norm(h + self.attn(h, rotary), eps)
        elif self.cfg.mlp_norm_quirk:
            t = h.transpose(1, 2)  # (B, D, S)
            h = rms_norm(t + self.mlp_t(t), eps).transpose(1, 2)  # normed over S, as the official code does
        else:
            h = rms_norm(h + self.mlp_t(h.transpose(1, 2)).transpose(1, 2), eps)
        return rms_norm(h + self.mlp(h), eps)


class Recursive(nn.Module):
    """What TRM and HRM share (the official code is the same in both): the input embedding with the puzzle prefix,
    positions, `networks` of n_layers post-norm blocks each, the LM and Q heads and fixed random initial states.
    A subclass sets `State` (a dataclass whose fields, in order, start from the buffers named in `inits`)."""

    State: type

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int,
                 networks: tuple[str, ...], inits: tuple[str, ...]):
        super().__init__()
        self.cfg = cfg
        self.seq_len = seq_len
        self.prefix = cfg.puzzle_emb_len  # P: puzzle-prefix positions
        total = seq_len + self.prefix
        d = cfg.hidden
        self.embed_scale = math.sqrt(d)
        self.embed_tokens = nn.Embedding(vocab_size, d)
        trunc_normal_(self.embed_tokens.weight, std=1.0 / self.embed_scale)
        self.puzzle_emb = SparseEmbedding(num_puzzle_ids, d) if cfg.puzzle_emb else None
        self.embed_pos = None
        if cfg.pos_encoding == "learned":
            self.embed_pos = nn.Parameter(trunc_normal_(torch.empty(total, d), std=1.0 / self.embed_scale))
        self.rotary = Rotary(d // cfg.n_heads, total, cfg.rope_theta) if cfg.pos_encoding == "rope" else None
        for name in networks:  # built here, between embedding and heads, so TRM keeps its init order
            self.add_module(name, nn.ModuleList(Block(cfg, total) for _ in range(cfg.n_layers)))
        self.lm_head = linear(d, vocab_size)
        self.q_head = linear(d, 2, bias=True)  # (q_halt, q_continue) on position 0
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)  # start far from halting
        self.inits = inits
        for name in inits:
            self.register_buffer(name, trunc_normal_(torch.empty(d), std=1.0))

    # -- state --------------------------------------------------------------------------------------------------------
    def initial_state(self, batch_size: int, device: torch.device | str):
        shape = (batch_size, self.seq_len + self.prefix, self.cfg.hidden)
        return self.State(*(getattr(self, n).to(device).expand(shape).clone() for n in self.inits))

    def reset(self, state, mask: Tensor):
        """Slots where mask (B,) is true start again from the fixed initial states."""
        m = mask.view(-1, 1, 1)
        return self.State(*(torch.where(m, getattr(self, n), s) for n, s in zip(self.inits, vars(state).values())))

    # -- pieces of one supervision step -----------------------------------------------------------------------------
    def embed(self, inputs: Tensor, puzzle_ids: Tensor) -> Tensor:  # (B, L) -> (B, P+L, D)
        e = self.embed_tokens(inputs)
        if self.prefix:
            b, d = inputs.shape[0], self.cfg.hidden
            if self.puzzle_emb is not None:  # first prefix slot = puzzle vector, the other P-1 are zeros
                first = self.puzzle_emb(puzzle_ids).to(e.dtype).unsqueeze(1)
                pre = torch.cat((first, e.new_zeros(b, self.prefix - 1, d)), dim=1)
            else:
                pre = e.new_zeros(b, self.prefix, d)
            e = torch.cat((pre, e), dim=1)
        if self.embed_pos is not None:
            e = 0.707106781 * (e + self.embed_pos)
        return self.embed_scale * e

    def run(self, blocks: nn.ModuleList, h: Tensor, injection: Tensor | float) -> Tensor:
        """One network: blocks(h + injection). Official: ReasoningModule(hidden_states, input_injection)."""
        h = h + injection
        for block in blocks:
            h = block(h, self.rotary)
        return h

    def readout(self, state, h: Tensor) -> StepOutput:
        """Heads on the answer state h (B, P+L, D); `state` is carried on (already detached)."""
        logits = self.lm_head(h[:, self.prefix:])  # (B, L, V)
        q = self.q_head(h[:, 0]).float()  # (B, 2)
        return StepOutput(state, logits, q[:, 0], q[:, 1] if self.cfg.act_continue else None)


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
