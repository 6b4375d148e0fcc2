"""Shared blocks of the recursive models (TRM, HRM, URM and the fixed-depth baseline).

Design choices, all from the official TRM/HRM code (see ../shared/reference/trm_hrm.md section 2):
- post-norm blocks with a *weightless* RMSNorm computed in float32 (eps 1e-5);
- no biases anywhere except the halting head;
- fused qkv and gate/up projections; attention through `scaled_dot_product_attention` (no flash-attn);
- rotary embeddings in the rotate-half convention, spanning the puzzle-prefix positions too;
- JAX-style truncated-normal init whose std is corrected for the truncation at +-2 sigma;
- the puzzle-identifier table is a buffer updated by sign-SGD on the rows of the batch only (`SparseEmbedding`);
- URM's short convolution (arXiv 2512.14693): a depthwise *causal* Conv1d over the sequence, after the gated
  expansion of the SwiGLU (`ConvSwiGLU`, the paper's best placement) or inside attention (the placement ablation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ponder.config import ModelConfig


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
    """Weightless RMSNorm over axis `dim` in float32: x * rsqrt(mean(x^2) + eps), the official formula. The fused
    F.rms_norm gives the same bits over the last axis of a contiguous tensor; over a strided one (TRM-MLP's norm over
    the transposed sequence axis) it rounds differently from the official code, so the formula is written out there
    (measured against the official outputs: bit-equal, tests/test_parity.py; the same speed)."""
    dtype = x.dtype
    x = x.float()
    if dim in (-1, x.ndim - 1) and x.is_contiguous():
        return F.rms_norm(x, (x.shape[-1],), eps=eps).to(dtype)
    return (x * torch.rsqrt(x.square().mean(dim, keepdim=True) + eps)).to(dtype)


def linear(d_in: int, d_out: int, bias: bool = False) -> nn.Linear:
    """LeCun-normal (std 1/sqrt(fan_in), truncated) linear layer, as the official CastedLinear. Built without
    PyTorch's default init (`skip_init`), so the random stream is consumed exactly as by the official code."""
    layer = torch.nn.utils.skip_init(nn.Linear, d_in, d_out, bias=bias, device=torch.get_default_device())
    trunc_normal_(layer.weight, std=1.0 / math.sqrt(d_in))
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def embedding(num: int, d: int, std: float) -> nn.Embedding:
    """Truncated-normal embedding table, as the official CastedEmbedding (no default init drawn first)."""
    table = torch.nn.utils.skip_init(nn.Embedding, num, d, device=torch.get_default_device())  # meta: shapes only
    trunc_normal_(table.weight, std=std)
    return table


def swiglu_width(d: int, expansion: float) -> int:
    """Official intermediate width: round(expansion * d * 2/3) rounded up to a multiple of 256 (at least 256: a
    tiny expansion rounds up, never to an MLP without units)."""
    inter = max(1, round(expansion * d * 2 / 3))
    return -(-inter // 256) * 256


ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}  # gate activation (model.activation)


class SiluGate(torch.autograd.Function):
    """SiLU(G) * U with a hand-written backward: dG = SiLU'(G) * (dY * U) computed in place in one buffer, and
    dU = dY * SiLU(G). Saves what autograd saves for the plain expression (G, U, SiLU(G)); the same values."""

    @staticmethod
    def forward(ctx, gate: Tensor, up: Tensor) -> Tensor:
        act = F.silu(gate)
        ctx.save_for_backward(gate, up, act)
        return act * up

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        gate, up, act = ctx.saved_tensors
        d_gate = grad * up  # dL/dSiLU(G)
        torch.ops.aten.silu_backward.grad_input(d_gate, gate, grad_input=d_gate)  # x SiLU'(G), in place
        return d_gate, grad * act


def _glu(gate: Tensor, up: Tensor, activation: str) -> Tensor:
    """act(G) * U; in place when no graph is recorded (the no-grad recursions), saving two buffers; `SiluGate` when
    a graph is recorded."""
    act = ACTIVATIONS[activation]
    if torch.is_grad_enabled():
        return SiluGate.apply(gate, up) if activation == "silu" else act(gate) * up
    return (act(gate) if activation == "gelu" else act(gate, inplace=True)).mul_(up)  # F.gelu has no in-place form


class SwiGLU(nn.Module):
    """down(act(G) * U) with [G, U] = gate_up(x); act = SiLU (official) or GELU/ReLU (URM activation ablation).

    G and U are computed by two matmuls with the two halves of the one gate_up weight (the official layout, so
    checkpoints are unchanged), not as the halves of one (..., 2I) product: every element is the same dot product
    in the same order (float32 bit-equal to the official outputs, tests/test_parity.py), but G and U come out
    contiguous. On CPU the element-wise gate over the interleaved halves of each row ran ~1.6x slower than over
    contiguous tensors (SiLU at hidden 128: 4.2 ms against 2.5), and the backward no longer writes strided halves."""

    def __init__(self, d: int, expansion: float, activation: str = "silu"):
        super().__init__()
        inter = swiglu_width(d, expansion)
        self.activation = activation
        self.gate_up = linear(d, 2 * inter)
        self.down = linear(inter, d)

    def expand(self, x: Tensor) -> Tensor:  # (..., d) -> (..., inter): the gated expansion H = act(G) * U
        rows = x.reshape(-1, x.shape[-1])  # one copy where x is a transposed view (TRM-MLP's mlp_t), not two
        w_gate, w_up = self.gate_up.weight.chunk(2)
        return _glu(F.linear(rows, w_gate), F.linear(rows, w_up), self.activation).view(*x.shape[:-1], -1)

    def forward(self, x: Tensor) -> Tensor:  # (..., d) -> (..., d)
        return self.down(self.expand(x))

    def mix(self, h: Tensor) -> Tensor:  # (B, d, D) -> (B, d, D): the SwiGLU over axis 1 (TRM-MLP's mlp_t)
        """As forward(h.transpose(1, 2)).transpose(1, 2), the official form, but as batched matmuls W @ h[b] over
        the broadcast weights: no transposed copies in or out, and the same products summed in the same order
        (float32 bit-equal; on CPU the mixer's half-block ran 1.13x faster with gradient, 1.22x without).
        Under autocast the official form: oneDNN's bf16 batched matmul over a broadcast weight ran 1.2x slower."""
        if torch.is_autocast_enabled(h.device.type):
            return self(h.transpose(1, 2)).transpose(1, 2)
        b = h.shape[0]
        w_gate, w_up = (w.expand(b, -1, -1) for w in self.gate_up.weight.chunk(2))
        hidden = _glu(torch.bmm(w_gate, h), torch.bmm(w_up, h), self.activation)
        return torch.bmm(self.down.weight.expand(b, -1, -1), hidden)


class CausalConv(nn.Conv1d):
    """URM short convolution: depthwise Conv1d over the sequence axis (channels = groups), with bias, PyTorch's
    default init (as official). Padded by k-1 and cut to the first T outputs, so out[t] mixes x[t-k+1..t] only.
    The official pads k // 2, the same for its kernel 2 but centred (non-causal) for odd k; we stay causal.
    `dtype` is the stored weights' type: float32 like every ponder parameter (autocast runs the conv in bf16), or
    bfloat16 as the official code stores them (drawn in float32, then rounded; the conv then runs in bf16 in any run
    and every optimiser update of these weights is rounded to bf16)."""

    def __init__(self, channels: int, kernel: int, dtype: str = "float32"):
        super().__init__(channels, channels, kernel, padding=kernel - 1, groups=channels)
        if dtype == "bfloat16":
            self.to(torch.bfloat16)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, C)
        y = super().forward(x.transpose(1, 2).to(self.weight.dtype))[..., : x.shape[1]].transpose(1, 2)
        return y.to(x.dtype)


class ConvSwiGLU(SwiGLU):
    """URM (official ConvSwiGLU): Y = down(SiLU(conv(act(G) * U))); the conv output replaces H (no residual)."""

    def __init__(self, d: int, expansion: float, kernel: int, activation: str = "silu", conv_dtype: str = "float32"):
        nn.Module.__init__(self)  # built in the official order: gate_up, conv, down (the seed then draws its weights)
        inter = swiglu_width(d, expansion)
        self.activation = activation
        self.gate_up = linear(d, 2 * inter)
        self.conv = CausalConv(inter, kernel, conv_dtype)
        self.down = linear(inter, d)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, d) -> (B, T, d)
        return self.down(F.silu(self.conv(self.expand(x))))


def feed_forward(cfg: ModelConfig) -> SwiGLU:
    """The channel MLP of a block: ConvSwiGLU when model.ffn is conv_swiglu with the conv placed in the FFN."""
    if cfg.ffn == "conv_swiglu" and cfg.conv_placement == "ffn":
        return ConvSwiGLU(cfg.hidden, cfg.expansion, cfg.conv_kernel, cfg.activation, cfg.conv_dtype)
    return SwiGLU(cfg.hidden, cfg.expansion, cfg.activation)


class Rotary(nn.Module):
    """cos/sin tables for rotate-half RoPE over `length` positions (prefix included), float32, not saved. `sin_signed`
    is the official sin table with its first half negated, so that the rotation needs no negated copy (see
    `apply_rotary`)."""

    def __init__(self, head_dim: int, length: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)  # (length, head_dim)
        self.register_buffer("cos", emb.cos(), persistent=False)
        sin = emb.sin()
        self.register_buffer("sin_signed", torch.cat((-sin[:, : head_dim // 2], sin[:, head_dim // 2:]), dim=-1),
                             persistent=False)


def apply_rotary(x: Tensor, cos: Tensor, sin_signed: Tensor) -> Tensor:
    """x: (B, H, L, Dh); rotate-half convention, computed in the tables' float32 and cast back to x's dtype, as the
    official code does (under bf16 autocast q and k are bf16; rotating them in bf16 would round the angles).
    The official x cos + cat(-x2, x1) sin, as x cos + cat(x2, x1) sin_signed: (-x2) s = x2 (-s) exactly, so the
    same bits with one pass fewer (no negated copy)."""
    dtype = x.dtype
    x = x.to(cos.dtype)
    return (x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin_signed).to(dtype)


class Attention(nn.Module):
    """Non-causal multi-head attention (no GQA), fused qkv, SDPA.

    URM's conv-placement ablation: `conv_placement` "value" runs the causal short conv on v after the qkv projection,
    "attention" on the attention output before o. A plain conv, no SiLU after it: the reference names only the
    position for these ablations, and the SiLU of ConvSwiGLU belongs to its gated FFN.
    """

    def __init__(self, d: int, n_heads: int, conv_placement: str | None = None, kernel: int = 2,
                 conv_dtype: str = "float32"):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = linear(d, 3 * d)
        self.o = linear(d, d)
        self.conv_placement = conv_placement
        self.conv = CausalConv(d, kernel, conv_dtype) if conv_placement else None

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "Attention":
        conv = cfg.conv_placement if cfg.ffn == "conv_swiglu" and cfg.conv_placement != "ffn" else None
        return cls(cfg.hidden, cfg.n_heads, conv, cfg.conv_kernel, cfg.conv_dtype)

    def forward(self, x: Tensor, rotary: Rotary | None) -> Tensor:
        b, l, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3x (B, L, D)
        if self.conv_placement == "value":
            v = self.conv(v)
        q, k, v = (t.view(b, l, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, L, Dh)
        cpu_autocast = x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        if cpu_autocast:  # attention in float32 on CPUs: their bf16 SDPA backward ran 6.8x slower than float32's
            q, k, v = q.float(), k.float(), v.float()  # (TRM-Att step at hidden 128: 1.34 s against 0.20)
        if rotary is not None:  # in float32 (the tables' dtype), also under autocast
            q, k = apply_rotary(q, rotary.cos, rotary.sin_signed), apply_rotary(k, rotary.cos, rotary.sin_signed)
        with torch.autocast("cpu", enabled=False):  # no effect unless CPU autocast is on
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, l, d)  # (B, L, D)
        if self.conv_placement == "attention":
            out = self.conv(out)
        return self.o(out)


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

