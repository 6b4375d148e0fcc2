"""The two shapes of model in ponder, behind one interface (`initial_state`, `reset`, `forward(state, inputs,
puzzle_ids) -> StepOutput`), so one trainer, one ACT loop (`ponder.act`) and one evaluator serve them all:

- `Recursive`: what TRM, HRM and URM share (the official codes are forks of one another): the post-norm block, the
  input embedding with the puzzle prefix, positions, the LM and Q heads, the fixed random initial states. A family
  subclasses it, names its networks (each n_layers `Block`s) and the buffers its `State` fields start from, and
  writes its own `forward`: one supervision step, read top to bottom as its paper (`.trm`, `.hrm`, `.urm`).
- `Sequence`: the 1dCA study's causal models (`.neox`, `.lstm`, `.mamba`, `.armt`): one pass over the sequence,
  nothing carried between supervision steps (trained and evaluated with N_sup = 1), the logits shifted so that the
  label at position t is read from position t - 1 (a target cell never sees its own input token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ponder.config import ModelConfig
from ponder.models.layers import (Attention, Rotary, SparseEmbedding, SwiGLU, embedding, feed_forward, linear,
                                  rms_norm, trunc_normal_)


@dataclass
class StepOutput:
    """What one supervision step of any family returns."""

    state: object  # the family's State (a dataclass of tensors), detached, to carry into the next supervision step
    logits: Tensor  # (B, L, V) answer logits (prefix positions removed)
    q_halt: Tensor  # (B,) float32 halting logit; halt when > 0
    q_continue: Tensor | None = None  # (B,) only for models trained with the ACT continue target (HRM)
    aux_loss: Tensor | None = None  # (B,) added to each example's loss (per-token ACT: penalty x mean remainder)
    hops: Tensor | None = None  # (B, layers) mean per-token ACT hops of each example in each ACT unit


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
        elif self.cfg.mlp_norm_quirk:  # normed over S, as the official code does (on its (B, D, S) transpose)
            h = rms_norm((h + self.mlp_t.mix(h)).transpose(1, 2), eps).transpose(1, 2)
        else:
            h = rms_norm(h + self.mlp_t.mix(h), eps)
        return rms_norm(h + self.mlp(h), eps)


class Recursive(nn.Module):
    """What TRM and HRM share (the official code is the same in both): the input embedding with the puzzle prefix,
    positions, `networks` of n_layers post-norm blocks each, the LM and Q heads and fixed random initial states.
    A subclass sets `State` (a dataclass whose fields, in order, start from the buffers named in `inits`)."""

    State: type
    # capabilities the evaluator and the trainers ask for (the model protocol's, declared by every family):
    generates = False  # answers token by token from a prompt (`generate`): greedy decoding, GRPO's sampling
    carries_memory = False  # carries a memory across segments of one input (ARMT)
    per_token_halting = False  # halts per token inside one pass (model.act of the sequence models)

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int,
                 networks: tuple[str, ...], inits: tuple[str, ...]):
        super().__init__()
        self.cfg = cfg
        self.seq_len = seq_len
        self.prefix = cfg.puzzle_emb_len  # P: puzzle-prefix positions
        total = seq_len + self.prefix
        d = cfg.hidden
        self.embed_scale = math.sqrt(d)
        # built in the official order (embedding, heads, puzzle table, positions, networks, initial states) with the
        # official initialisers, so that a seed draws the official weights (tests/test_parity.py)
        self.embed_tokens = embedding(vocab_size, d, std=1.0 / self.embed_scale)
        self.lm_head = linear(d, vocab_size)
        self.q_head = linear(d, 2, bias=True)  # (q_halt, q_continue) on position 0
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)  # start far from halting
        self.puzzle_emb = SparseEmbedding(num_puzzle_ids, d) if cfg.puzzle_emb else None
        self.embed_pos = None
        if cfg.pos_encoding == "learned":
            self.embed_pos = nn.Parameter(trunc_normal_(torch.empty(total, d), std=1.0 / self.embed_scale))
        self.rotary = Rotary(d // cfg.n_heads, total, cfg.rope_theta) if cfg.pos_encoding == "rope" else None
        for name in networks:
            self.add_module(name, nn.ModuleList(Block(cfg, total) for _ in range(cfg.n_layers)))
        self.inits = inits
        for name in inits:
            self.register_buffer(name, trunc_normal_(torch.empty(d), std=1.0))

    def output_heads(self) -> tuple[nn.Module, ...]:
        """The output layers (Muon leaves them to the element-wise optimiser)."""
        return self.lm_head, self.q_head

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


@dataclass
class NoState:
    """What a `Sequence` model carries between supervision steps: nothing."""


class Sequence(nn.Module):
    """Base of the 1dCA study's causal sequence models. A subclass builds its network and defines
    `causal_logits(inputs) -> (B, L, V)`, where position t predicts token t + 1 (a causal LM's convention), and, with
    per-token ACT, `act_units` (the `Halting` modules whose statistics the step reports)."""

    State = NoState
    puzzle_emb = None  # no puzzle-identifier table: the rule is read from the given states
    generates = True  # capabilities: see `Recursive`
    carries_memory = False

    @property
    def per_token_halting(self) -> bool:
        return bool(self.act_units)

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int):
        super().__init__()
        self.cfg, self.vocab_size, self.seq_len = cfg, vocab_size, seq_len
        self.act_units: list = []  # set by subclasses with model.act != off

    def output_heads(self) -> tuple[nn.Module, ...]:
        """The output layer (Muon leaves it to the element-wise optimiser)."""
        return (self.head,)

    def initial_state(self, batch_size: int, device: torch.device | str) -> NoState:
        return NoState()

    def reset(self, state: NoState, mask: Tensor) -> NoState:
        return state

    def causal_logits(self, inputs: Tensor) -> Tensor:  # (B, L) -> (B, L, V)
        raise NotImplementedError

    def next_token_logits(self, prompt: Tensor, steps: int):
        """Yield the logits (B, V) of the next token `steps` times, after each `send` of the token chosen: the
        plain way recomputes the whole prefix each time; a family with a cache (GPT-NeoX) overrides it."""
        seq = prompt
        for _ in range(steps):
            token = yield self.causal_logits(seq)[:, -1]
            seq = torch.cat((seq, token[:, None]), dim=1)

    def generate(self, prompt: Tensor, steps: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """(B, P) prompt -> (B, steps) tokens, each fed back as the next input: greedy (temperature 0) or sampled
        from softmax(logits / temperature) (GRPO). The model sees only the prompt and its own tokens."""
        out = []
        stream = self.next_token_logits(prompt, steps)
        logits = next(stream)
        for i in range(steps):
            logits = logits.float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                token = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                token = logits.argmax(-1)
            out.append(token)
            if i + 1 < steps:
                logits = stream.send(token)
        stream.close()
        return torch.stack(out, 1) if out else prompt.new_zeros(prompt.shape[0], 0)

    def forward(self, state: NoState, inputs: Tensor, puzzle_ids: Tensor) -> StepOutput:
        logits = self.causal_logits(inputs)  # (B, L, V): position t predicts token t + 1
        aligned = torch.cat((logits.new_zeros(logits[:, :1].shape), logits[:, :-1]), dim=1)  # label t read at t - 1
        q_halt = logits.new_zeros(inputs.shape[0], dtype=torch.float32)  # no halting head: one pass
        if not self.act_units:
            return StepOutput(state, aligned, q_halt)
        cost = torch.stack([u.remainder.mean(1) for u in self.act_units], 1).mean(1)  # (B,) mean remainder
        hops = torch.stack([u.hops.mean(1) for u in self.act_units], 1)  # (B, units)
        return StepOutput(state, aligned, q_halt, aux_loss=self.cfg.act_penalty * cost.float(), hops=hops.float())
