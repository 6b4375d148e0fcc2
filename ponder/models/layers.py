"""Shared blocks of the recursive models (TRM now; HRM and URM reuse them).

Design choices, all from the official TRM/HRM code (see ../shared/reference/trm_hrm.md section 2):
- post-norm blocks with a *weightless* RMSNorm computed in float32 (eps 1e-5);
- no biases anywhere except the halting head;
- fused qkv and gate/up projections; attention through `scaled_dot_product_attention` (no flash-attn);
- rotary embeddings in the rotate-half convention, spanning the puzzle-prefix positions too;
- JAX-style truncated-normal init whose std is corrected for the truncation at +-2 sigma;
- the puzzle-identifier table is a buffer updated by sign-SGD on the rows of the batch only (`SparseEmbedding`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def trunc_normal_(tensor: Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0,
                  generator: torch.Generator | None = None) -> Tensor:
    """Truncated normal on [lower, upper] sigmas whose *resulting* std is `std` (as jax.nn.initializers does)."""
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2)
        a, b = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
        z = (b - a) / 2
        c = (2 * math.pi) ** -0.5
        pdf_u, pdf_l = c * math.exp(-0.5 * upper**2), c * math.exp(-0.5 * lower**2)
        comp_std = std / math.sqrt(1 - (upper * pdf_u - lower * pdf_l) / z - ((pdf_u - pdf_l) / z) ** 2)
        tensor.uniform_(a, b, generator=generator).erfinv_().mul_(sqrt2 * comp_std)
        return tensor.clip_(lower * comp_std, upper * comp_std)


def rms_norm(x: Tensor, eps: float, dim: int = -1) -> Tensor:
    """Weightless RMSNorm over axis `dim`, in float32 (the fused F.rms_norm kernel for the last axis)."""
    dtype = x.dtype
    x = x.float()
    if dim in (-1, x.ndim - 1):
        return F.rms_norm(x, (x.shape[-1],), eps=eps).to(dtype)
    return (x * torch.rsqrt(x.square().mean(dim, keepdim=True) + eps)).to(dtype)


def linear(d_in: int, d_out: int, bias: bool = False) -> nn.Linear:
    """LeCun-normal (std 1/sqrt(fan_in), truncated) linear layer, as the official CastedLinear."""
    layer = nn.Linear(d_in, d_out, bias=bias)
    trunc_normal_(layer.weight, std=1.0 / math.sqrt(d_in))
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def swiglu_width(d: int, expansion: float) -> int:
    """Official intermediate width: round(expansion * d * 2/3) rounded up to a multiple of 256."""
    inter = round(expansion * d * 2 / 3)
    return -(-inter // 256) * 256


def _glu(gate: Tensor, up: Tensor) -> Tensor:
    """silu(gate) * up; in place when no graph is recorded (the T-1 no-grad recursions), saving two buffers."""
    if torch.is_grad_enabled():
        return F.silu(gate) * up
    return F.silu(gate, inplace=True).mul_(up)


class SwiGLU(nn.Module):
    def __init__(self, d: int, expansion: float):
        super().__init__()
        inter = swiglu_width(d, expansion)
        self.gate_up = linear(d, 2 * inter)
        self.down = linear(inter, d)

    def forward(self, x: Tensor) -> Tensor:  # (..., d) -> (..., d)
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(_glu(gate, up))


class Rotary(nn.Module):
    """cos/sin tables for rotate-half RoPE over `length` positions (prefix included), float32, not saved."""

    def __init__(self, head_dim: int, length: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)  # (length, head_dim)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: (B, H, L, Dh); rotate-half convention."""
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)


class Attention(nn.Module):
    """Non-causal multi-head attention (no GQA), fused qkv, SDPA."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = linear(d, 3 * d)
        self.o = linear(d, d)

    def forward(self, x: Tensor, rotary: Rotary | None) -> Tensor:
        b, l, d = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)  # 3x (B, H, L, Dh)
        if rotary is not None:
            cos, sin = rotary.cos.to(q.dtype), rotary.sin.to(q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, Dh)
        return self.o(out.transpose(1, 2).reshape(b, l, d))


class SparseEmbedding(nn.Module):
    """Per-puzzle-identifier vectors in a *buffer* (not a Parameter), trained by sign-SGD on the batch's rows.

    In training, the rows of the batch are copied into a leaf tensor that requires grad; `SignSGD` then applies
    p <- p * (1 - lr * wd) - lr * sign(sum of grads per id) to those rows only, so the cost per step does not grow
    with the table (ARC has ~1M identifiers). In eval the table is read directly.
    """

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(num, dim))
        self.local: Tensor | None = None  # (B, dim) leaf of the last training forward
        self.local_ids: Tensor | None = None

    def forward(self, ids: Tensor) -> Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return self.weight[ids]
        self.local = self.weight[ids].detach().requires_grad_(True)
        self.local_ids = ids
        return self.local
