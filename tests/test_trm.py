"""TRM: weight counts of the paper configs, gradient flow only through the last recursion, detached carry."""

import copy

import pytest
import torch

from ponder.config import ModelConfig
from ponder.models import build_model, count_params
from ponder.models.trm import State


def tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(**{**dict(hidden=16, n_heads=2, n_latent=2, n_cycles=3, puzzle_emb_len=4), **kw})
    return build_model(cfg, vocab_size=6, seq_len=9, num_puzzle_ids=3)


@pytest.mark.parametrize("mixer,pos,vocab,seq_len,expected", [
    ("mlp", "none", 11, 81, 5_028_866),  # TRM-MLP Sudoku (paper: 5M)
    ("attention", "rope", 11, 81, 6_828_034),  # TRM-Att Sudoku
    ("attention", "rope", 6, 900, 6_822_914),  # TRM-Att Maze 30x30
    ("attention", "rope", 12, 900, 6_829_058),  # TRM-Att ARC (paper: 7M)
])
def test_paper_weight_counts(mixer, pos, vocab, seq_len, expected):
    model = build_model(ModelConfig(mixer=mixer, pos_encoding=pos), vocab, seq_len)
    assert count_params(model) == expected


def test_initial_state_and_heads():
    m = tiny()
    assert torch.all(m.q_head.weight == 0) and torch.all(m.q_head.bias == -5)
    s = m.initial_state(3, "cpu")
    assert torch.equal(s.y[1, 4], m.y_init) and torch.equal(s.z[2, 0], m.z_init)
    assert not any(b is m.y_init for b in m.parameters())  # fixed buffers, not learned


def unroll(model, x, y, z, recursions: int):
    """The TRM recursion written out by hand: per recursion n updates of z, then one of y."""
    for _ in range(recursions):
        for _ in range(model.cfg.n_latent):
            z = model.f(z, y + x)
        y = model.f(y, z)
    return y, z


def _loss(model, state, inputs, ids):
    out = model(state, inputs, ids)
    return out.logits.square().mean() + out.q_halt.square().mean(), out


def test_gradient_only_through_last_recursion():
    m = tiny(n_cycles=3)
    inputs = torch.randint(1, 6, (2, 9))
    ids = torch.tensor([1, 2])
    state = m.initial_state(2, "cpu")
    # (1) calls of f that build a graph: exactly n + 1 per supervision step (the last recursion)
    calls = []
    m.blocks[0].register_forward_hook(lambda mod, i, o: calls.append(o.requires_grad))
    loss, out = _loss(m, state, inputs, ids)
    n = m.cfg.n_latent
    assert calls == [False] * (2 * (n + 1)) + [True] * (n + 1)
    loss.backward()
    g_model = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}

    # (2) the same gradients from running the first T-1 recursions by hand without grad, then a T=1 model
    m1 = copy.deepcopy(m)
    m1.zero_grad()
    object.__setattr__(m1, "cfg", m.cfg.__class__(**{**m.cfg.__dict__, "n_cycles": 1}))
    with torch.no_grad():
        y, z = unroll(m, m.embed(inputs, ids), state.y, state.z, recursions=2)
    m1.train()
    loss1, _ = _loss(m1, State(y, z), inputs, ids)
    loss1.backward()
    for k, p in m1.named_parameters():
        if k in g_model:
            torch.testing.assert_close(p.grad, g_model[k], rtol=1e-5, atol=1e-7)

    # (3) and they differ from full backpropagation through all recursions (the no_grad matters)
    m2 = copy.deepcopy(m)
    m2.zero_grad()
    y, z = unroll(m2, m2.embed(inputs, ids), state.y, state.z, recursions=3)
    (m2.lm_head(y[:, m2.prefix:]).square().mean() + m2.q_head(y[:, 0])[:, 0].float().square().mean()).backward()
    w = "blocks.0.mlp.gate_up.weight"
    assert not torch.allclose(m2.get_parameter(w).grad, g_model[w])


def test_carry_is_detached():
    m = tiny()
    out = m(m.initial_state(2, "cpu"), torch.randint(1, 6, (2, 9)), torch.zeros(2, dtype=torch.long))
    assert out.state.y.grad_fn is None and not out.state.y.requires_grad
    assert out.state.z.grad_fn is None and not out.state.z.requires_grad
    assert out.logits.requires_grad


def test_puzzle_prefix_only_first_slot_and_scale():
    m = tiny(pos_encoding="none")
    with torch.no_grad():
        m.puzzle_emb.weight[2] = 1.0
    m.eval()
    x = m.embed(torch.ones(1, 9, dtype=torch.long), torch.tensor([2]))
    assert x.shape == (1, 4 + 9, 16)
    torch.testing.assert_close(x[0, 0], torch.full((16,), 4.0))  # sqrt(16) * 1
    assert torch.all(x[0, 1:4] == 0)  # the other prefix positions are zeros
    torch.testing.assert_close(x[0, 4], 4.0 * m.embed_tokens.weight[1])


def test_mlp_norm_quirk_normalises_over_sequence():
    m = tiny(mixer="mlp", pos_encoding="none")
    block = m.blocks[0]
    h = torch.randn(2, 13, 16)
    with torch.no_grad():
        t = h.transpose(1, 2)
        mixed = t + block.mlp_t(t)  # (B, D, S): normalised over S in the official code
        ref = (mixed * torch.rsqrt(mixed.square().mean(-1, keepdim=True) + 1e-5)).transpose(1, 2)
        ref = ref + block.mlp(ref)
        ref = ref * torch.rsqrt(ref.square().mean(-1, keepdim=True) + 1e-5)
        torch.testing.assert_close(block(h, None), ref)
        m_fixed = tiny(mixer="mlp", pos_encoding="none", mlp_norm_quirk=False)
        m_fixed.load_state_dict(m.state_dict())
        assert not torch.allclose(m_fixed.blocks[0](h, None), ref)


def test_silu_gate_backward_is_autograd_of_the_plain_expression():
    """SwiGLU's gate computes dG in place in one buffer: same values as autograd of silu(G) * U, bit for bit in
    float32, and a correct gradient by finite differences in float64."""
    from ponder.models.layers import SiluGate

    g64, u64 = (torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(SiluGate.apply, (g64, u64))
    gate, up = (torch.randn(4, 7, 6, requires_grad=True) for _ in range(2))
    w = torch.randn(4, 7, 6)
    plain = torch.nn.functional.silu(gate) * up
    fused = SiluGate.apply(gate, up)
    assert torch.equal(plain, fused)
    g_plain = torch.autograd.grad((plain * w).sum(), (gate, up))
    g_fused = torch.autograd.grad((fused * w).sum(), (gate, up))
    assert all(torch.equal(a, b) for a, b in zip(g_plain, g_fused))


def test_swiglu_fast_forms_equal_the_official_row_major_linear():
    """SwiGLU computes G and U by two matmuls with the halves of gate_up, and TRM-MLP's position mixer as batched
    matmuls over broadcast weights: float32 results bit-equal to the official form down(silu(G) * U) with
    [G, U] = gate_up(x) (the official code transposes (B, S, D) to (B, D, S) for the mixer and back), with and
    without gradient; the gradients of the new forms agree to rounding."""
    from ponder.models.layers import SwiGLU

    torch.manual_seed(0)
    m = SwiGLU(97, 4.0)

    def official(x):
        gate, up = m.gate_up(x).chunk(2, dim=-1)
        return m.down(torch.nn.functional.silu(gate) * up)

    h = torch.randn(8, 97, 32)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            assert torch.equal(m(h.transpose(1, 2)), official(h.transpose(1, 2)))
            assert torch.equal(m.mix(h), official(h.transpose(1, 2)).transpose(1, 2))
    w = torch.randn(8, 97, 32)
    x = h.clone().requires_grad_()
    (official(x.transpose(1, 2)).transpose(1, 2) * w).sum().backward()
    ref = [x.grad] + [p.grad for p in m.parameters()]
    m.zero_grad()
    x = h.clone().requires_grad_()
    (m.mix(x) * w).sum().backward()
    for a, b in zip([x.grad] + [p.grad for p in m.parameters()], ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
