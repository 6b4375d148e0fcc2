"""Shared layers against hand-written formulas on fixed weights: attention with RoPE on queries and keys, URM's
ConvSwiGLU, rotation in float32 under bf16 autocast."""

import math

import torch
import torch.nn.functional as F

from ponder.models.layers import Attention, ConvSwiGLU, Rotary, apply_rotary


def test_attention_rotates_queries_and_keys():
    """Non-causal multi-head attention with rotate-half RoPE on q AND k, written out with explicit angles."""
    torch.manual_seed(0)
    b, length, d, heads = 2, 7, 8, 2
    attn, rotary = Attention(d, heads), Rotary(d // heads, length, 10000.0)
    x = torch.randn(b, length, d)
    q, k, v = (x @ attn.qkv.weight.T).split(d, dim=-1)
    dh = d // heads

    def rotate(t):  # (B, L, H, Dh): pair i with i + Dh/2, angle pos * theta^(-2i/Dh)
        out = t.clone()
        for pos in range(length):
            for i in range(dh // 2):
                angle = pos * 10000.0 ** (-2 * i / dh)
                a, c = t[:, pos, :, i], t[:, pos, :, i + dh // 2]
                out[:, pos, :, i] = a * math.cos(angle) - c * math.sin(angle)
                out[:, pos, :, i + dh // 2] = c * math.cos(angle) + a * math.sin(angle)
        return out

    q, k, v = (t.view(b, length, heads, dh) for t in (q, k, v))
    q, k = rotate(q), rotate(k)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
    want = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(b, length, d) @ attn.o.weight.T
    torch.testing.assert_close(attn(x, rotary), want, atol=1e-5, rtol=1e-5)


def test_conv_swiglu_formula():
    """URM's ConvSwiGLU: down(SiLU(conv(SiLU(G) * U))), the conv depthwise and causal over the sequence (out[t] =
    w0 h[t-1] + w1 h[t] + b), SiLU after it (not before)."""
    torch.manual_seed(0)
    layer = ConvSwiGLU(8, 2.0, kernel=2)
    x = torch.randn(2, 5, 8)
    gate, up = (x @ layer.gate_up.weight.T).chunk(2, dim=-1)
    h = F.silu(gate) * up  # (B, T, I)
    w, bias = layer.conv.weight[:, 0], layer.conv.bias  # (I, 2), (I,)
    conv = torch.stack([w[:, 1] * h[:, t] + (w[:, 0] * h[:, t - 1] if t else 0) + bias for t in range(5)], dim=1)
    want = F.silu(conv) @ layer.down.weight.T
    torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)


def test_rope_in_float32_under_autocast():
    """As the official code: q and k (bf16 under autocast) are rotated in float32 and cast back, so the angles are
    not rounded to bf16 first."""
    rotary = Rotary(16, 64, 10000.0)
    x = torch.randn(1, 2, 64, 16).to(torch.bfloat16)
    x1, x2 = x.float().chunk(2, dim=-1)
    want = (x.float() * rotary.cos + torch.cat((-x2, x1), dim=-1) * rotary.sin).to(torch.bfloat16)
    got = apply_rotary(x, rotary.cos, rotary.sin)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    rounded = apply_rotary(x, rotary.cos.to(torch.bfloat16), rotary.sin.to(torch.bfloat16))
    assert not torch.equal(rounded, want)  # rotating with bf16 tables would differ
    attn = Attention(32, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(torch.randn(1, 64, 32), rotary)
    assert y.dtype == torch.bfloat16
