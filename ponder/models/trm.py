"""TRM: the Tiny Recursive Model ("Less is More: Recursive Reasoning with Tiny Networks", arXiv 2510.04871).

One small network f (2 post-norm blocks) is applied recursively to two states:
    x  embedded input (puzzle prefix + tokens, x sqrt(D))    official: input_embeddings
    y  current answer, decoded by the LM head                  official: z_H
    z  latent reasoning state                                  official: z_L
One *supervision step* = T recursions, each n latent updates z <- f(z, y + x) and one answer update y <- f(y, z).
The first T-1 recursions run under no_grad; only the last carries gradient (n + 1 calls of f). The returned state is
detached, so each supervision step is its own optimisation problem (deep supervision). The deep-supervision loop,
halting and refilling live in `ponder.models.act`; this file is one step of the model.

Faithful to the official code (ponder keeps its numbers):
- token embedding x sqrt(D); 16 prefix positions of which only the first holds the learned puzzle vector;
- RoPE over prefix + tokens, or none (TRM-MLP) or learned positions (scaled by 1/sqrt(2));
- TRM-MLP: a SwiGLU across the sequence replaces attention; the official code norms the result while still
  transposed (over the sequence axis) - kept behind `mlp_norm_quirk`;
- fixed random initial y and z (truncated normal buffers, not learned); Q-head on position 0 with zero weight, bias -5.
Weight counts (puzzle table excluded): TRM-MLP Sudoku 5,028,866; TRM-Att Sudoku 6,828,034 (tests/test_trm.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ponder.config import ModelConfig
from ponder.models.layers import Attention, Rotary, SparseEmbedding, SwiGLU, linear, rms_norm, trunc_normal_


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
    """Post-norm: h <- norm(h + mixer(h)); h <- norm(h + SwiGLU(h))."""

    def __init__(self, cfg: ModelConfig, total_len: int):
        super().__init__()
        self.cfg = cfg
        if cfg.mixer == "attention":
            self.attn = Attention(cfg.hidden, cfg.n_heads)
        else:  # TRM-MLP: mixes positions with a SwiGLU over the sequence axis (official mlp_t)
            self.mlp_t = SwiGLU(total_len, cfg.expansion)
        self.mlp = SwiGLU(cfg.hidden, cfg.expansion)

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


class TRM(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int = 1):
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
        self.blocks = nn.ModuleList(Block(cfg, total) for _ in range(cfg.n_layers))  # the network f
        self.lm_head = linear(d, vocab_size)
        self.q_head = linear(d, 2, bias=True)  # (q_halt, q_continue) on position 0
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)  # start far from halting
        self.register_buffer("y_init", trunc_normal_(torch.empty(d), std=1.0))  # official H_init
        self.register_buffer("z_init", trunc_normal_(torch.empty(d), std=1.0))  # official L_init

    # -- state --------------------------------------------------------------------------------------------------------
    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        shape = (batch_size, self.seq_len + self.prefix, self.cfg.hidden)
        return State(self.y_init.to(device).expand(shape).clone(), self.z_init.to(device).expand(shape).clone())

    def reset(self, state: State, mask: Tensor) -> State:
        """Slots where mask (B,) is true start again from the fixed initial y and z."""
        m = mask.view(-1, 1, 1)
        return State(torch.where(m, self.y_init, state.y), torch.where(m, self.z_init, state.z))

    # -- one supervision step ---------------------------------------------------------------------------------------
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

    def f(self, h: Tensor, injection: Tensor) -> Tensor:
        """The one network: blocks(h + injection). Official: L_level(hidden_states, input_injection)."""
        h = h + injection
        for block in self.blocks:
            h = block(h, self.rotary)
        return h

    def forward(self, state: State, inputs: Tensor, puzzle_ids: Tensor) -> StepOutput:
        n, T = self.cfg.n_latent, self.cfg.n_cycles  # official L_cycles, H_cycles
        x = self.embed(inputs, puzzle_ids)
        y, z = state.y, state.z
        with torch.no_grad():  # T-1 recursions without gradient
            for _ in range(T - 1):
                for _ in range(n):
                    z = self.f(z, y + x)
                y = self.f(y, z)
        for _ in range(n):  # the last recursion carries gradient: n + 1 calls of f
            z = self.f(z, y + x)
        y = self.f(y, z)
        logits = self.lm_head(y[:, self.prefix:])  # (B, L, V)
        q = self.q_head(y[:, 0]).float()  # (B, 2)
        return StepOutput(State(y.detach(), z.detach()), logits, q[:, 0])  # q[:, 1] unused (no ACT continue)
