"""ARMT: the Associative Recurrent Memory Transformer (Rodkin et al., arXiv 2407.04841), as the 1dCA study uses it
(../shared/reference/ca1d.md section 6; the reference's `modeling_amt/language_modeling.py`). Written here: no
package provides it.

The GPT-NeoX backbone (`ponder.models.neox`) reads the sequence segment by segment (model.segment_len tokens: with
the 1dCA `segments` layout one transition per segment). Each segment gets model.mem_tokens learned memory tokens
appended (the write positions; they see the whole segment, the segment's tokens do not see them). Every layer l has
an associative memory, a matrix A_l (d_key x d_model per head) and a normaliser z_l (d_key), reset for every sample
and kept across its segments, with gradients through all of them (full BPTT):
- read, before layer l, from the second segment on, at every position:
      q = normalise(phi(W_q h));   h <- h + q A / (z . q + 1e-5)
- write, after layer l, from its outputs m at the memory positions (delta rule with a corrected normaliser):
      k = normalise(phi(W_k m)),  v = W_v m,  beta = sigmoid(W_b m) (a scalar per head),
      v_old = k A / (z . k + 1e-5)                         (what the memory returns for k; 0 on the first write)
      A <- A + sum_j beta_j k_j (v_j - v_old_j)^T
      z <- z + sum_j gamma_j k_j,  gamma = clip(1 - (z . k + 1e-5) / |k|^2, 0, 1), detached (1 on the first write)
- phi = DPFP with nu = model.dpfp_nu: [relu(x), relu(-x)] times its rolled copies, d_key = 2 nu d_mem; W_v starts
  at zero, so the first updates store nothing until it learns.
Sizes (the reference's scripts): 16 memory tokens, d_mem 32, 1 memory head, nu 3 over the paper's NeoX (4 layers,
d 128, 4 heads): 926,980 weights with the 128-token vocabulary. With model.act=layer each layer's read + layer is
repeated per token and the memory written once, from the mixed output; with act=model the stack is iterated and the
memory written on the final hop only (the reference's ACTForWholeARMT).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ponder import UserError
from ponder.config import ModelConfig
from ponder.models.base import Sequence
from ponder.models.halting import Halting, adaptive


def dpfp(x: Tensor, nu: int) -> Tensor:
    """Deterministic parameter-free projection (Schlag et al. 2021): (..., d) -> (..., 2 nu d)."""
    x = torch.cat((F.relu(x), F.relu(-x)), dim=-1)
    rolled = torch.cat([x.roll(shifts=j, dims=-1) for j in range(1, nu + 1)], dim=-1)
    return torch.cat([x] * nu, dim=-1) * rolled


class AssociativeMemory(nn.Module):
    """One layer's memory: its projections (parameters) and its state A, z (per sample, set by `reset`)."""

    def __init__(self, d_model: int, cfg: ModelConfig):
        super().__init__()
        self.heads, self.nu = cfg.mem_heads, cfg.dpfp_nu
        self.q = nn.Linear(d_model, cfg.mem_dim, bias=False)
        self.k = nn.Linear(d_model, cfg.mem_dim, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.b = nn.Linear(d_model, cfg.mem_heads)
        with torch.no_grad():
            self.v.weight.zero_()
        self.A: Tensor | None = None  # (B, H, d_key / H, d_model / H)
        self.z: Tensor | None = None  # (B, H, d_key / H)

    def reset(self) -> None:
        self.A = self.z = None

    def _heads(self, x: Tensor) -> Tensor:  # (B, T, H * d) -> (B, H, T, d)
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def _keys(self, x: Tensor, proj: nn.Linear) -> Tensor:  # (B, T, D) -> (B, H, T, d_key / H), unit length
        return F.normalize(dpfp(self._heads(proj(x)), self.nu), dim=-1)

    def _lookup(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """(values the memory returns for keys, their denominators z . key + 1e-5), (B, H, T, d) and (B, H, T, 1)."""
        num = torch.einsum("bhtk,bhkd->bhtd", keys, self.A)
        den = torch.einsum("bhk,bhtk->bht", self.z, keys)[..., None] + 1e-5
        return num / den, den

    def read(self, h: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D)
        if self.A is None:  # the first segment: nothing stored yet
            return h
        values, _ = self._lookup(self._keys(h, self.q))
        return h + values.transpose(1, 2).reshape(h.shape)

    def write(self, m: Tensor) -> None:  # m: (B, M, D), the layer's outputs at the memory tokens
        k = self._keys(m, self.k)  # (B, H, M, d_key / H)
        v = self._heads(self.v(m))  # (B, H, M, D / H)
        beta = torch.sigmoid(self.b(m)).transpose(1, 2)  # (B, H, M)
        if self.A is None:
            old, gamma = torch.zeros_like(v), torch.ones_like(k[..., :1])
            self.A = k.new_zeros(k.shape[0], self.heads, k.shape[-1], v.shape[-1])
            self.z = k.new_zeros(k.shape[0], self.heads, k.shape[-1])
        else:
            old, den = self._lookup(k)
            gamma = torch.clip(1 - den / k.square().sum(-1, keepdim=True), 0, 1).detach()
        self.A = self.A + (k * beta[..., None]).transpose(-1, -2) @ (v - old)  # sum_j beta_j k_j (v_j - old_j)^T
        self.z = self.z + (gamma * k).sum(dim=-2)


class MemoryLayer(nn.Module):
    """A backbone layer with its memory: read -> layer (repeated per token with act=layer) -> write."""

    def __init__(self, layer: nn.Module, memory: AssociativeMemory, mem_tokens: int, halting: Halting | None):
        super().__init__()
        self.layer, self.memory, self.mem_tokens, self.halting = layer, memory, mem_tokens, halting
        self.writes = True  # act=model sets it per hop: only the final hop writes

    def forward(self, h: Tensor, *args, **kwargs) -> Tensor:
        def step(x: Tensor, final: bool) -> Tensor:
            return self.layer(self.memory.read(x), *args, **kwargs)

        out = step(h, True) if self.halting is None else self.halting(step, h)
        if self.writes:
            self.memory.write(out[:, -self.mem_tokens:])
        return out


class ARMT(Sequence):
    generates = False  # it reads fixed segments (the segments layout has no prompt to continue)
    carries_memory = True

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int = 1):
        super().__init__(cfg, vocab_size, seq_len)
        if seq_len % cfg.segment_len:
            raise UserError(f"model.segment_len={cfg.segment_len} does not divide the sequence length {seq_len}: ARMT "
                            f"reads 1dCA with data.ca1d.layout=segments and model.segment_len=2 x (width + 1)")
        from transformers import GPTNeoXForCausalLM

        from ponder.models.neox import neox_config

        d = cfg.hidden
        self.lm = GPTNeoXForCausalLM(neox_config(cfg, vocab_size, cfg.segment_len + cfg.mem_tokens))
        per_layer = [Halting(d, cfg) if cfg.act == "layer" else None for _ in range(cfg.n_layers)]
        layers = nn.ModuleList(MemoryLayer(layer, AssociativeMemory(d, cfg), cfg.mem_tokens, halting)
                               for layer, halting in zip(self.lm.gpt_neox.layers, per_layer))
        self.memory_layers = list(layers)  # a plain list: the modules are registered once, in the backbone
        if cfg.act == "layer":
            self.act_units = per_layer
        else:
            layers, self.act_units = adaptive(layers, d, cfg, before_hop=self._writes_on)
        self.lm.gpt_neox.layers = layers
        embed = self.lm.gpt_neox.embed_in.weight
        self.memory = nn.Parameter(torch.randn(cfg.mem_tokens, d) * embed.detach().std())  # the reference's init

    def _writes_on(self, final: bool) -> None:
        for layer in self.memory_layers:
            layer.writes = final

    def output_heads(self) -> tuple:
        return (self.lm.get_output_embeddings(),)

    def causal_logits(self, inputs: Tensor) -> Tensor:  # (B, L) -> (B, L, V)
        for layer in self.memory_layers:
            layer.memory.reset()  # every sample starts from an empty memory
        b, s, m = inputs.shape[0], self.cfg.segment_len, self.cfg.mem_tokens
        embeds = self.lm.gpt_neox.embed_in(inputs)
        logits = []
        for lo in range(0, inputs.shape[1], s):  # positions restart in every segment, as the reference's
            x = torch.cat((embeds[:, lo:lo + s], self.memory.expand(b, m, -1).to(embeds.dtype)), dim=1)
            h = self.lm.gpt_neox(inputs_embeds=x, use_cache=False).last_hidden_state
            logits.append(self.lm.get_output_embeddings()(h[:, :-m]))
        for layer in self.memory_layers:
            layer.memory.reset()  # no graph kept alive between calls
        return torch.cat(logits, dim=1)
