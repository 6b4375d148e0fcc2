"""The 1dCA study's sequence models (GPT-NeoX, LSTM, Mamba, ARMT) and per-token ACT: weight counts at the paper
config, causality of the layouts, ARMT's memory update against a hand computation, per-token ACT's weights,
remainders and ponder cost, and exact resume."""

import math

import numpy as np
import pytest
import torch

from ponder.config import Ca1dConfig, ModelConfig, resolve
from ponder.models import build_model, count_params
from ponder.models.armt import ARMT, AssociativeMemory
from ponder.models.halting import Halting
from ponder.tasks.ca1d import MASK, Ca1dTask

PAPER = dict(hidden=128, n_layers=4, n_heads=4, expansion=4.0, n_supervision=1, puzzle_emb=False, puzzle_emb_len=0)
TINY = dict(hidden=32, n_layers=2, n_heads=2, n_supervision=1, puzzle_emb=False, puzzle_emb_len=0, mem_tokens=3,
            mem_dim=4, segment_len=6)


@pytest.mark.parametrize("family, weights", [("neox", 826_112), ("lstm", 561_280), ("mamba", 499_328),
                                              ("armt", 926_980)])
def test_paper_config_weight_counts(family, weights):
    """d_model 128, 4 layers (NeoX/ARMT: 4 heads, MLP 512), the reference's 128-token vocabulary; ARMT adds per layer
    W_q, W_k (128 x 32), W_v (128 x 128), W_b (128 + 1) and 16 memory tokens; per-token ACT adds a 129-weight halting
    unit per layer."""
    seq = 420 if family == "armt" else 231
    cfg = ModelConfig(family=family, **PAPER, segment_len=42)
    assert count_params(build_model(cfg, 128, seq)) == weights
    act = ModelConfig(family=family, **PAPER, segment_len=42, act="layer")
    assert count_params(build_model(act, 128, seq)) == weights + 4 * 129


@pytest.mark.parametrize("family, layout", [("neox", "causal"), ("lstm", "causal"), ("mamba", "segments"),
                                             ("armt", "segments"), ("neox", "segments")])
def test_no_target_cell_sees_itself_or_a_later_one(family, layout):
    """Change the input at target position j (a mask token there): the logits read for target cells 0..j do not
    move (cell j is read one position earlier), the next one does."""
    task = Ca1dTask(Ca1dConfig(radius=1, width=6, context=3, k=0, max_k=2, layout=layout, train_size=4, test_size=4,
                               train_rules=4, test_rules=4))
    inputs = torch.from_numpy(task.build("test", 0).inputs.astype(np.int64))
    torch.manual_seed(0)
    model = build_model(ModelConfig(family=family, **{**TINY, "segment_len": 2 * (6 + 1)}, act="layer"),
                        task.metadata().vocab_size, task.seq_len).eval()
    base = model(model.initial_state(4, "cpu"), inputs, torch.zeros(4, dtype=torch.long)).logits
    target = task.target_pos
    assert (inputs[:, target] == MASK).all()
    for j in range(len(target) - 1):
        changed = inputs.clone()
        changed[:, target[j]] = 1
        logits = model(model.initial_state(4, "cpu"), changed, torch.zeros(4, dtype=torch.long)).logits
        assert torch.equal(logits[:, target[: j + 1]], base[:, target[: j + 1]]), j
        assert not torch.equal(logits[:, target[j + 1]], base[:, target[j + 1]]), j


def dpfp_reference(x: np.ndarray, nu: int) -> np.ndarray:
    a = np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)])
    return np.concatenate([a] * nu) * np.concatenate([np.roll(a, j) for j in range(1, nu + 1)])


def test_armt_memory_update_by_hand():
    """Two segments through one layer's memory, recomputed with numpy from the paper's equations (one head):
    write 1: A = sum_j beta_j k_j v_j^T, z = sum_j k_j; read: h + q A / (z.q + 1e-5);
    write 2: v_old = k A / (z.k + 1e-5), A += sum beta (v - v_old) k^T, z += sum clip(1 - (z.k + 1e-5)/|k|^2, 0, 1) k."""
    cfg = ModelConfig(family="armt", hidden=4, n_heads=2, mem_dim=4, mem_heads=1, dpfp_nu=2, n_supervision=1)
    mem = AssociativeMemory(4, cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in (mem.q, mem.k, mem.v, mem.b):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
        mem.b.bias.fill_(0.3)
    m1, m2, h = (torch.randn(1, n, 4, generator=g) for n in (2, 2, 3))
    assert torch.equal(mem.read(h), h)  # nothing stored before the first write
    mem.write(m1)
    read = mem.read(h)
    mem.write(m2)

    W = {name: getattr(mem, name).weight.detach().numpy().astype(np.float64) for name in "qkvb"}

    def key(x, w):
        k = dpfp_reference(w @ x, 2)
        return k / np.linalg.norm(k)

    def beta(x):
        return 1 / (1 + np.exp(-(W["b"] @ x + 0.3)[0]))

    A, z = np.zeros((16, 4)), np.zeros(16)  # d_key = 2 nu d_mem = 16
    for x in m1[0].double().numpy():
        k = key(x, W["k"])
        A += beta(x) * np.outer(k, W["v"] @ x)
        z += k
    want_read = []
    for x in h[0].double().numpy():
        q = key(x, W["q"])
        want_read.append(x + q @ A / (z @ q + 1e-5))
    A2, z2, gammas = A.copy(), z.copy(), []
    for x in m2[0].double().numpy():
        k = key(x, W["k"])
        den = z @ k + 1e-5
        old = k @ A / den
        A2 += beta(x) * np.outer(k, W["v"] @ x - old)
        gammas.append(np.clip(1 - den / (k @ k), 0, 1))
        z2 += gammas[-1] * k
    assert any(0.1 < g < 0.9 for g in gammas)  # a key that overlaps the stored ones: the correction is exercised
    np.testing.assert_allclose(read[0].detach().numpy(), np.array(want_read), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mem.A[0, 0].detach().numpy(), A2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mem.z[0, 0].detach().numpy(), z2, rtol=1e-5, atol=1e-6)


def test_armt_memory_starts_empty_for_every_sample():
    """W_v starts at zero (nothing is stored until it learns); each sample's answer is its own, whatever else is in
    the batch, and a second call gives the same (the memory is reset, not carried from the last call)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="armt", **TINY), 7, 18).eval()
    assert all(float(layer.memory.v.weight.detach().abs().sum()) == 0 for layer in model.memory_layers)
    with torch.no_grad():
        for layer in model.memory_layers:
            layer.memory.v.weight.normal_()  # a trained-looking memory, so that it matters
    x = torch.randint(1, 7, (3, 18))
    ids = torch.zeros(3, dtype=torch.long)
    together = model(model.initial_state(3, "cpu"), x, ids).logits
    alone = model(model.initial_state(1, "cpu"), x[1:2], ids[:1]).logits
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(model.initial_state(3, "cpu"), x, ids).logits, together, atol=0, rtol=0)
    first_segment = model(model.initial_state(3, "cpu"), x[:, :6], ids).logits  # no memory read in segment 1
    torch.testing.assert_close(together[:, :6], first_segment, atol=1e-6, rtol=1e-6)
    assert isinstance(model, ARMT)


def halting(max_hop: int, p: float | None = None, **kw) -> Halting:
    unit = Halting(3, ModelConfig(family="lstm", n_supervision=1, act="layer", act_max_hop=max_hop, **kw))
    if p is not None:  # a constant halting probability
        with torch.no_grad():
            unit.p.weight.zero_()
            unit.p.bias.fill_(math.log(p / (1 - p)))
    return unit


def test_act_weights_remainder_and_hops_by_hand():
    """p = 0.4 everywhere, threshold 0.9: hops 1 and 2 weigh 0.4 each (0.8 <= 0.9), hop 3 would pass it, so it takes
    the remainder 0.2 and the token halts after 3 hops. With f = the hop's number the output is 0.4*1 + 0.4*2 +
    0.2*3 = 1.8. With max_hop 2 the second hop takes the remainder 0.6."""
    h = torch.zeros(2, 5, 3)
    numbered = lambda: iter(range(1, 10))  # noqa: E731

    def by_hop(counter):
        return lambda x, final: torch.full_like(x, float(next(counter)))

    unit = halting(4, p=0.4)
    out = unit(by_hop(numbered()), h)
    torch.testing.assert_close(out, torch.full_like(h, 1.8))
    torch.testing.assert_close(unit.remainder, torch.full((2, 5), 0.2))
    assert unit.hops.eq(3).all()
    unit = halting(2, p=0.4)
    out = unit(by_hop(numbered()), h)
    torch.testing.assert_close(out, torch.full_like(h, 0.4 * 1 + 0.6 * 2))
    torch.testing.assert_close(unit.remainder, torch.full((2, 5), 0.6))
    assert unit.hops.eq(2).all()


def test_act_weights_sum_to_one_per_token():
    """Random halting unit, random states: every token's hop weights sum to 1 (f returns ones, so the output is
    the sum of the weights); tokens halt at different hops."""
    torch.manual_seed(0)
    unit = halting(4)
    with torch.no_grad():
        unit.p.weight.normal_(0, 2.0)
        unit.p.bias.fill_(-0.5)
    h = torch.randn(4, 9, 3)
    out = unit(lambda x, final: torch.ones_like(x) + 0 * x.sum(-1, keepdim=True), h)
    torch.testing.assert_close(out, torch.ones_like(h))
    assert len(set(unit.hops.flatten().tolist())) > 1


def test_constant_depth_runs_exactly_n_hops():
    calls = []
    unit = halting(3, act_halting="constant")
    out = unit(lambda x, final: calls.append(final) or x * 2, torch.ones(1, 2, 3))
    assert calls == [False, False, True] and torch.equal(out, torch.full((1, 2, 3), 8.0))
    assert unit.hops.eq(3).all() and unit.remainder.eq(0).all()
    assert not any(p.requires_grad for p in unit.parameters())  # no halting unit at all


def test_ponder_cost_enters_the_loss():
    """The model's aux loss is act_penalty x the mean remainder over its ACT units and tokens, per example; the ACT
    loss adds it to the total."""
    from ponder.act import act_loss

    torch.manual_seed(0)
    model = build_model(ModelConfig(family="lstm", **TINY, act="layer", act_penalty=0.01), 7, 10)
    x = torch.randint(1, 7, (3, 10))
    out = model(model.initial_state(3, "cpu"), x, torch.zeros(3, dtype=torch.long))
    want = 0.01 * torch.stack([u.remainder.mean(1) for u in model.act_units], 1).mean(1)
    torch.testing.assert_close(out.aux_loss, want)
    assert out.hops.shape == (3, 2)
    labels = torch.full((3, 10), -100)
    labels[:, -2:] = 1
    with_act = act_loss(out, labels, "softmax", 0.0)
    out.aux_loss = None
    without = act_loss(out, labels, "softmax", 0.0)
    torch.testing.assert_close(with_act.total - without.total, want.sum())


def test_resume_is_bit_identical_with_noisy_act(tmp_path):
    """LSTM with per-token ACT and noisy halting (torch's global stream, saved in the checkpoint) on the 1dCA causal
    layout: 6 steps straight == 3 + --resume + 3."""
    from ponder import checkpoint
    from ponder.tasks import build_dataset
    from ponder.trainer import train

    args = ["model.family=lstm", "model.hidden=16", "model.n_layers=2", "model.act=layer", "model.act_noise=0.1",
            "data.ca1d.layout=causal", "data.ca1d.train_size=64", "data.ca1d.test_size=8", "train.batch_size=8",
            "train.steps=6", "train.max_minutes=0", "train.checkpoint_every=0", "train.log_every=1",
            "train.lr_warmup_steps=2"]
    data = build_dataset(resolve("ca1d-seq-cpu", args).data, tmp_path / "data")
    cfg = resolve("ca1d-seq-cpu", [*args, f"data.path={data}"])
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False, until=3)
    train(cfg, tmp_path / "b", resume=True, progress=False)
    wa = checkpoint.load_weights(checkpoint.find(tmp_path / "a"), ema=False)
    wb = checkpoint.load_weights(checkpoint.find(tmp_path / "b"), ema=False)
    assert wa.keys() == wb.keys() and any("halting" in k for k in wa)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.parametrize("family, act", [("neox", "layer"), ("neox", "model"), ("lstm", "model"), ("mamba", "layer"),
                                         ("armt", "model")])
def test_a_plain_checkpoint_starts_an_act_model_layer_for_layer(tmp_path, family, act):
    """train.init from a model without ACT (the CPU study's ACT member starts from neox-k1): every tensor lands in
    the layer it came from, only the halting units start fresh, so with exactly one hop the ACT model computes what
    the plain one does."""
    from ponder import checkpoint
    from ponder.cli import main

    layout = "segments" if family == "armt" else "causal"
    small = [f"model.family={family}", "model.hidden=16", "model.n_layers=3", "model.n_heads=2",
             f"data.ca1d.layout={layout}", "data.ca1d.k=0", "data.ca1d.train_size=32", "data.ca1d.test_size=8",
             "train.batch_size=8", "train.steps=2", "train.max_minutes=0", "train.eval_every=0"]
    assert main(["train", "ca1d-seq-cpu", *small, "--out", str(tmp_path / "plain")]) == 0
    cfg = resolve("ca1d-seq-cpu", small)
    one_hop = resolve("ca1d-seq-cpu", [*small, f"model.act={act}", "model.act_halting=constant",
                                       "model.act_max_hop=1"])
    four = resolve("ca1d-seq-cpu", [*small, f"model.act={act}", "model.act_max_hop=4"])
    meta = checkpoint.load_meta(checkpoint.find(tmp_path / "plain"))
    plain = build_model(cfg.model, meta["vocab_size"], meta["seq_len"], 1)
    plain.load_state_dict(checkpoint.load_weights(checkpoint.find(tmp_path / "plain"), ema=True))
    adaptive = build_model(one_hop.model, meta["vocab_size"], meta["seq_len"], 1)
    info = checkpoint.warm_start(adaptive, str(tmp_path / "plain"))
    assert info["fresh"] == []  # constant depth: no halting unit, nothing left fresh
    x = torch.randint(1, meta["vocab_size"], (2, meta["seq_len"]))
    with torch.no_grad():
        want = plain(plain.initial_state(2, "cpu"), x, torch.zeros(2, dtype=torch.long)).logits
        got = adaptive(adaptive.initial_state(2, "cpu"), x, torch.zeros(2, dtype=torch.long)).logits
    torch.testing.assert_close(got, want)
    halting = build_model(four.model, meta["vocab_size"], meta["seq_len"], 1)
    fresh = checkpoint.warm_start(halting, str(tmp_path / "plain"))["fresh"]
    assert fresh and all("halting" in name for name in fresh)  # the halting units, and only they


def test_armt_refuses_a_sequence_its_segments_do_not_divide():
    from ponder import UserError

    with pytest.raises(UserError, match="layout=segments"):
        build_model(ModelConfig(family="armt", **TINY), 7, 45)  # the causal layout's 45 tokens, segments of 6


def test_armt_memory_carries_the_whole_segment_and_gradients_flow_through_it():
    """What is written is the layer's output at the memory tokens (appended after the segment, so they read all of
    it): segment 2's logits depend on the last token of segment 1, and the gradient of segment 2's logits reaches
    segment 1's embeddings through the memory (the update A is part of the graph: backpropagation through segments);
    nothing flows backwards in time (segment 1's logits do not depend on segment 2)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="armt", **TINY), 7, 18).eval()
    with torch.no_grad():
        for layer in model.memory_layers:
            layer.memory.v.weight.normal_()  # a trained-looking memory, so that it matters
    s = model.cfg.segment_len
    x = torch.randint(1, 7, (1, 18))
    embed = model.lm.gpt_neox.embed_in
    real = embed.forward
    leaf = {}

    def watched(ids):
        e = real(ids).detach().requires_grad_(True)
        leaf["e"] = e
        return e

    embed.forward = watched
    try:
        logits = model.causal_logits(x)
    finally:
        embed.forward = real
    e = leaf["e"]
    later = torch.autograd.grad(logits[:, s:2 * s].sum(), e, retain_graph=True)[0]
    assert float(later[0, s - 1].abs().sum()) > 0  # segment 1's last token reaches segment 2 only through memory
    assert float(later[0, :s].abs().sum()) > 0
    v = [layer.memory.v.weight for layer in model.memory_layers]  # enters the logits only through what A stored
    assert all(float(g.abs().sum()) > 0 for g in torch.autograd.grad(logits[:, s:2 * s].sum(), v, retain_graph=True))
    assert all(g is None or float(g.abs().sum()) == 0
               for g in torch.autograd.grad(logits[:, :s].sum(), v, retain_graph=True, allow_unused=True))
    earlier = torch.autograd.grad(logits[:, :s].sum(), e)[0]
    assert float(earlier[0, s:].abs().sum()) == 0


def test_act_ponder_cost_gradient_matches_finite_differences():
    """The per-token ACT ponder cost (the mean remainder R = 1 - sum of the halting probabilities of the hops before
    the last) is differentiable in the halting unit: its gradient with respect to the unit's bias equals the finite
    difference (the hop counts fixed), so the penalty pushes the halting probabilities, as ACT's does."""
    torch.manual_seed(0)
    unit = halting(4)
    with torch.no_grad():
        unit.p.weight.normal_(0, 0.3)
        unit.p.bias.fill_(-1.0)  # p ~ 0.27: tokens take 3-4 hops, the remainder is a sum of several p
    unit.eval()
    h = torch.randn(2, 5, 3)

    def cost() -> torch.Tensor:
        unit(lambda x, final: torch.tanh(x + 0.5), h)
        return unit.remainder.mean()

    value = cost()
    value.backward()
    hops = unit.hops.clone()
    eps = 1e-3
    with torch.no_grad():
        unit.p.bias += eps
        up = cost()
        assert torch.equal(unit.hops, hops)  # the same hops: the finite difference is the gradient's
        unit.p.bias -= 2 * eps
        down = cost()
        unit.p.bias += eps
    fd = float(up - down) / (2 * eps)
    assert abs(fd) > 1e-3 and float(unit.p.bias.grad) == pytest.approx(fd, rel=1e-3)
