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


def official_sin(rotary):
    """The official sin table, sin(cat(freqs, freqs)): sin_signed with its first half's sign restored."""
    half = rotary.sin_signed.shape[-1] // 2
    return torch.cat((-rotary.sin_signed[:, :half], rotary.sin_signed[:, half:]), dim=-1)


def test_rope_in_float32_under_autocast():
    """As the official code: q and k (bf16 under autocast) are rotated in float32 and cast back, so the angles are
    not rounded to bf16 first."""
    rotary = Rotary(16, 64, 10000.0)
    x = torch.randn(1, 2, 64, 16).to(torch.bfloat16)
    x1, x2 = x.float().chunk(2, dim=-1)
    want = (x.float() * rotary.cos + torch.cat((-x2, x1), dim=-1) * official_sin(rotary)).to(torch.bfloat16)
    got = apply_rotary(x, rotary.cos, rotary.sin_signed)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    rounded = apply_rotary(x, rotary.cos.to(torch.bfloat16), rotary.sin_signed.to(torch.bfloat16))
    assert not torch.equal(rounded, want)  # rotating with bf16 tables would differ
    attn = Attention(32, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(torch.randn(1, 64, 32), rotary)
    assert y.dtype == torch.bfloat16


def test_rope_without_the_rotated_copy_is_bit_equal_to_the_official_formula():
    """apply_rotary computes x cos + cat(x2, x1) sin_signed in place of the official x cos + cat(-x2, x1) sin:
    bit-equal in float32, and the same gradient."""
    rotary = Rotary(8, 97, 10000.0)
    x = torch.randn(3, 2, 97, 8, requires_grad=True)
    x1, x2 = x.chunk(2, dim=-1)
    want = x * rotary.cos + torch.cat((-x2, x1), dim=-1) * official_sin(rotary)
    got = apply_rotary(x, rotary.cos, rotary.sin_signed)
    assert torch.equal(got, want)
    w = torch.randn_like(want)
    (g_want,) = torch.autograd.grad((want * w).sum(), x)
    (g_got,) = torch.autograd.grad((got * w).sum(), x)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-6)


def test_attention_runs_in_float32_under_cpu_autocast():
    """On CPU under bf16 autocast, q, k and v enter SDPA in float32 (CPU's bf16 SDPA backward is several times
    slower): the attention equals the float32 attention of the bf16-rounded projections, and o is autocast (bf16)."""
    torch.manual_seed(0)
    attn, rotary = Attention(32, 2), Rotary(16, 10, 10000.0)
    x = torch.randn(2, 10, 32)
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        return real(q, k, v, *args, **kwargs)

    F.scaled_dot_product_attention = spy
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = attn(x, rotary)
    finally:
        F.scaled_dot_product_attention = real
    assert seen == [(torch.float32, torch.float32, torch.float32, False)]
    assert y.dtype == torch.bfloat16
    q, k, v = (t.float().view(2, 10, 2, 16).transpose(1, 2)
               for t in (x.bfloat16() @ attn.qkv.weight.bfloat16().T).chunk(3, dim=-1))
    q, k = apply_rotary(q, rotary.cos, rotary.sin_signed), apply_rotary(k, rotary.cos, rotary.sin_signed)
    out = real(q, k, v).transpose(1, 2).reshape(2, 10, 32)
    torch.testing.assert_close(y, (out.bfloat16() @ attn.o.weight.bfloat16().T), rtol=0, atol=0)
