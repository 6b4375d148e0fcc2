"""URM and the fixed-depth baseline: weight counts, TBPTL gradient flow, causal short conv, Muon resume, presets."""

import pytest
import torch
from helpers import tiny, weights

from ponder import checkpoint
from ponder.config import ModelConfig, resolve
from ponder.models import build_model, count_params
from ponder.models.layers import Attention, CausalConv, ConvSwiGLU
from ponder.trainer import train

BLOCK = 3_412_480  # attention 1,048,576 + gate_up 1,572,864 + down 786,432 + conv 1536 x 2 + 1536 bias


def tiny_urm(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(**{**dict(family="urm", hidden=16, n_heads=2, n_layers=2, loops=4, no_grad_loops=2,
                                ffn="conv_swiglu", puzzle_emb_len=1), **kw})
    return build_model(cfg, vocab_size=6, seq_len=9, num_puzzle_ids=3)


def run(m, batch: int = 2):
    inputs = torch.randint(1, 6, (batch, 9), generator=torch.Generator().manual_seed(1))
    return m(m.initial_state(batch, "cpu"), inputs, torch.arange(batch) % 3)


def test_released_urm_arc_weight_count():
    cfg = ModelConfig(family="urm", n_layers=4, ffn="conv_swiglu", conv_kernel=2, puzzle_emb_len=1)
    m = build_model(cfg, vocab_size=12, seq_len=900)
    assert sum(p.numel() for p in m.blocks[0].parameters()) == BLOCK  # reference: ~3.41M per layer
    assert count_params(m) == 4 * BLOCK + 12 * 512 * 2 + 512 * 2 + 2 == 13_663_234  # reference: ~13.6M
    assert m.prefix == 1 and m.h_init.shape == (512,)


@pytest.mark.parametrize("no_grad_loops", [2, 0])
def test_tbptl_graph_only_in_the_last_loops(no_grad_loops):
    m = tiny_urm(no_grad_loops=no_grad_loops)
    calls = []
    m.blocks[0].register_forward_hook(lambda mod, i, o: calls.append(o.requires_grad))
    out = run(m)
    assert calls == [False] * no_grad_loops + [True] * (4 - no_grad_loops)
    assert out.state.h.grad_fn is None and out.q_continue is None
    (out.logits.square().mean() + out.q_halt.square().mean()).backward()
    assert all(p.grad is not None for p in m.parameters())


def test_reset_and_act_continue():
    m = tiny_urm(act_continue=True)
    s = m.initial_state(2, "cpu")
    out = run(m)
    assert out.q_continue.shape == (2,)
    r = m.reset(out.state, torch.tensor([True, False]))
    assert torch.equal(r.h[0], s.h[0]) and torch.equal(r.h[1], out.state.h[1])


def _changed(f, x: torch.Tensor, j: int) -> torch.Tensor:
    """Positions (B=1) whose output moves when the input at position j is perturbed."""
    y = x.clone()
    y[:, j] += 1.0
    with torch.no_grad():
        return (f(y) - f(x)).abs().sum(-1)[0] > 0


@pytest.mark.parametrize("kernel", [2, 3])
def test_conv_swiglu_is_causal(kernel):
    torch.manual_seed(0)
    ffn, conv = ConvSwiGLU(16, 2.0, kernel), CausalConv(16, kernel)
    x, j = torch.randn(1, 10, 16), 4
    for f in (ffn, conv):  # the FFN placement, and the conv alone (as placed on attention output or values)
        assert f(x).shape == x.shape
        expected = torch.zeros(10, dtype=torch.bool)
        expected[j: j + kernel] = True  # out[t] depends on t-k+1..t only
        assert torch.equal(_changed(f, x, j), expected)


@pytest.mark.parametrize("placement", ["attention", "value"])
def test_conv_placements_in_attention(placement):
    m = tiny_urm(conv_placement=placement, conv_kernel=3)
    attn = m.blocks[0].attn
    assert attn.conv_placement == placement and attn.conv.kernel_size == (3,)
    assert not hasattr(m.blocks[0].mlp, "conv")  # the conv moved out of the FFN
    conv_ffn, conv_attn = 256 * 3 + 256, 16 * 3 + 16  # depthwise over inter (FFN) vs hidden (attention) channels
    assert count_params(m) == count_params(tiny_urm(conv_kernel=3)) - 2 * conv_ffn + 2 * conv_attn
    assert run(m).logits.shape == (2, 9, 6)
    assert Attention.from_config(ModelConfig(ffn="swiglu", conv_placement="value")).conv is None  # no conv at all


@pytest.mark.parametrize("activation", ["silu", "gelu", "relu"])
def test_activations(activation):
    m = tiny_urm(activation=activation)
    out = run(m)
    with torch.no_grad():  # the in-place path of the no-grad loops gives the same numbers
        torch.testing.assert_close(run(m).logits, out.logits)


def test_transformer_baseline_has_no_recursion():
    torch.manual_seed(0)
    cfg = ModelConfig(family="transformer", hidden=16, n_heads=2, n_layers=3, loops=5, no_grad_loops=2)
    m = build_model(cfg, vocab_size=6, seq_len=9, num_puzzle_ids=3)
    calls = []
    for b in m.blocks:
        b.register_forward_hook(lambda mod, i, o: calls.append(o.requires_grad))
    run(m)
    assert calls == [True] * 3  # every block once, all with gradient
    block = sum(p.numel() for p in m.blocks[0].parameters())
    assert count_params(m) == 3 * block + 6 * 16 * 2 + 16 * 2 + 2  # blocks + embedding, lm_head, q_head
    assert count_params(build_model(ModelConfig(family="transformer", n_layers=8), 11, 81)) == 27_275_266  # = HRM


URM_TINY = ["model.family=urm", "model.n_layers=1", "model.loops=2", "model.no_grad_loops=1",
            "model.ffn=conv_swiglu", "model.puzzle_emb_len=1", "train.optimizer=muon"]


def test_muon_train_and_resume_bit_identical(tmp_path, data_dir):  # noqa: F811
    cfg = tiny(data_dir, "train.steps=2", *URM_TINY)
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False, until=1)
    train(cfg, tmp_path / "b", resume=True, progress=False)
    (wa, ea), (wb, eb) = weights(tmp_path / "a"), weights(tmp_path / "b")
    for k in wa:
        assert torch.equal(wa[k], wb[k]) and torch.equal(ea[k], eb[k]), k
    opt = checkpoint.load_state(checkpoint.list_checkpoints(tmp_path / "a")[-1])["optimizer"]
    muon, adam = opt["optimizers"]
    assert "momentum_buffer" in next(iter(muon["state"].values())) and "exp_avg" in next(iter(adam["state"].values()))


@pytest.mark.parametrize("name,vocab,seq_len,expected", [
    ("arc1-urm", 12, 900, 13_663_234), ("arc2-urm", 12, 900, 13_663_234),
    ("sudoku-extreme-urm", 11, 81, 13_662_210), ("sudoku-extreme-transformer", 11, 81, 27_275_266)])
def test_presets_build(name, vocab, seq_len, expected):
    cfg = resolve(name)
    assert count_params(build_model(cfg.model, vocab, seq_len)) == expected


def test_conv_dtype_bfloat16_stores_the_official_conv_and_rounds_away_small_updates(tmp_path, data_dir):  # noqa: F811
    """model.conv_dtype=bfloat16 keeps the short conv's weights in bf16 as the official URM does: the same draws as
    float32, rounded; the forward still returns float32; and an update below half a bf16 step leaves them as they
    were, where float32 weights move (the official conv barely trains at lr ~1e-4: docs/models.md)."""
    plain, official = tiny_urm(), tiny_urm(conv_dtype="bfloat16")
    convs = [n for n, p in official.named_parameters() if ".conv." in n]
    assert convs and all(p.dtype == (torch.bfloat16 if n in convs else torch.float32)
                         for n, p in official.named_parameters())
    for n, p in plain.named_parameters():
        assert torch.equal(p.to(dict(official.named_parameters())[n].dtype), dict(official.named_parameters())[n])
    assert run(official).logits.dtype == torch.float32
    # one training step at lr 1e-6 against lr 0 (Adam-atan2 moves every weight by ~lr): float32 conv weights move,
    # bf16 ones (a step of 2^-8 near 0.5) stay where they were
    moved = {}
    for dtype in ("float32", "bfloat16"):
        runs = []
        for lr in ("0", "1e-6"):
            cfg = tiny(data_dir, "train.steps=1", f"train.lr={lr}", "train.lr_warmup_steps=0",
                       "train.weight_decay=0", "train.ema=false", *URM_TINY[:-1], f"model.conv_dtype={dtype}")
            train(cfg, tmp_path / f"{dtype}-{lr}", progress=False)
            runs.append(weights(tmp_path / f"{dtype}-{lr}")[0])
        conv = [n for n in runs[0] if ".conv." in n]
        assert all(runs[1][n].dtype == getattr(torch, dtype) for n in conv)
        moved[dtype] = sum(int((runs[0][n] != runs[1][n]).sum()) for n in conv) / sum(runs[0][n].numel() for n in conv)
        assert any(not torch.equal(runs[0][n], runs[1][n]) for n in runs[0] if ".conv." not in n)  # the rest trains
    assert moved["float32"] > 0.9 and moved["bfloat16"] == 0.0, moved
