"""HRM and the TRM ablations: paper weight counts, 1-step gradient, detached carry, the ACT continue head and target,
single-z TRM, and a short training run of HRM."""

import copy

import pytest
import torch
from helpers import tiny as tiny_run

from ponder import checkpoint
from ponder.act import Carry, continue_target
from ponder.config import ModelConfig
from ponder.models import build_model, count_params
from ponder.models.hrm import HRMState
from ponder.models.base import StepOutput
from ponder.trainer import train

HRM_PAPER = dict(family="hrm", n_layers=4, n_cycles=2, n_latent=2, puzzle_emb_len=1, act_continue=True)


def tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    base = dict(family="hrm", hidden=16, n_heads=2, n_layers=1, n_cycles=2, n_latent=3, puzzle_emb_len=1)
    return build_model(ModelConfig(**{**base, **kw}), vocab_size=6, seq_len=9, num_puzzle_ids=3)


def batch(b: int = 2):
    torch.manual_seed(1)
    return torch.randint(1, 6, (b, 9)), torch.arange(b) % 3


@pytest.mark.parametrize("vocab,seq_len,expected", [(11, 81, 27_275_266), (12, 900, 27_276_290)])  # Sudoku, ARC
def test_paper_weight_counts(vocab, seq_len, expected):
    with torch.device("meta"):  # shapes only: 10x faster than initialising 27M weights
        assert count_params(build_model(ModelConfig(**HRM_PAPER), vocab, seq_len)) == expected


def unroll(m, x, z_h, z_l, grad_calls: int):
    """The HRM recursion written out: H_cycles x (L_cycles L calls, one H call); only the last `grad_calls` calls
    keep their graph (the earlier ones are cut off by detaching)."""
    H, L = m.cfg.n_cycles, m.cfg.n_latent
    calls = [("L", "H")[i == L] for _ in range(H) for i in range(L + 1)]
    for k, name in enumerate(calls):
        if k == len(calls) - grad_calls:
            z_h, z_l = z_h.detach(), z_l.detach()
        if name == "L":
            z_l = m.run(m.L_level, z_l, z_h + x)
        else:
            z_h = m.run(m.H_level, z_h, z_l)
    return z_h, z_l


def _loss(out) -> torch.Tensor:
    return out.logits.square().mean() + out.q_halt.square().mean()


@pytest.mark.parametrize("one_step", [True, False])
def test_gradient_only_through_the_last_calls(one_step):
    m = tiny(one_step_grad=one_step)
    H, L = m.cfg.n_cycles, m.cfg.n_latent
    inputs, ids = batch()
    state = m.initial_state(2, "cpu")
    calls = []
    m.L_level[0].register_forward_hook(lambda mod, i, o: calls.append(("L", o.requires_grad)))
    m.H_level[0].register_forward_hook(lambda mod, i, o: calls.append(("H", o.requires_grad)))
    out = m(state, inputs, ids)
    grad_l = 1 if one_step else L  # L calls with a graph: 1-step gradient, or the whole last H cycle
    order = [("L", "H")[i == L] for _ in range(H) for i in range(L + 1)]
    assert [c for c, _ in calls] == order
    assert [g for _, g in calls] == [False] * (len(order) - grad_l - 1) + [True] * (grad_l + 1)
    _loss(out).backward()

    # the same values and gradients from the recursion written out by hand
    ref = copy.deepcopy(m)
    ref.zero_grad()
    z_h, z_l = unroll(ref, ref.embed(inputs, ids), state.z_h, state.z_l, grad_calls=grad_l + 1)
    ref_out = ref.readout(HRMState(z_h.detach(), z_l.detach()), z_h)
    torch.testing.assert_close(ref_out.logits, out.logits)
    torch.testing.assert_close(ref_out.state.z_l, out.state.z_l)
    _loss(ref_out).backward()
    for (k, p), q in zip(m.named_parameters(), ref.parameters()):
        assert (p.grad is None) == (q.grad is None), k
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    # full backpropagation through every call gives different gradients (the no_grad matters)
    full = copy.deepcopy(m)
    full.zero_grad()
    z_h, _ = unroll(full, full.embed(inputs, ids), state.z_h, state.z_l, grad_calls=H * (L + 1))
    _loss(full.readout(None, z_h)).backward()
    w = "L_level.0.mlp.gate_up.weight"
    assert not torch.allclose(full.get_parameter(w).grad, m.get_parameter(w).grad)


def test_state_carry_detached_and_reset():
    m = tiny()
    s = m.initial_state(3, "cpu")
    assert torch.equal(s.z_h[1, 4], m.H_init) and torch.equal(s.z_l[2, 0], m.L_init)
    assert torch.all(m.q_head.weight == 0) and torch.all(m.q_head.bias == -5)
    out = m(s, *batch(3))
    for t in (out.state.z_h, out.state.z_l):
        assert t.grad_fn is None and not t.requires_grad
    assert out.logits.requires_grad
    r = m.reset(out.state, torch.tensor([True, False, True]))
    assert torch.equal(r.z_h[0, 0], m.H_init) and torch.equal(r.z_l[2, 5], m.L_init)
    assert torch.equal(r.z_h[1], out.state.z_h[1])


@pytest.mark.parametrize("family", ["hrm", "trm"])
@pytest.mark.parametrize("act_continue", [True, False])
def test_q_continue_iff_act_continue(family, act_continue):
    m = tiny(family=family, act_continue=act_continue)
    out = m(m.initial_state(2, "cpu"), *batch())
    assert (out.q_continue is not None) == act_continue
    if act_continue:
        torch.testing.assert_close(out.q_continue, torch.full((2,), -5.0))  # q_head bias at init
        assert out.q_continue.dtype == torch.float32


def test_continue_target_hand_made():
    q_halt, q_cont = torch.tensor([1.0, -2.0, 0.5, 2.0]), torch.tensor([3.0, -1.0, 0.0, -4.0])
    seen = []

    def model(state, inputs, ids):  # the "next step" logits; the target pass must build no graph
        seen.append(torch.is_grad_enabled())
        return StepOutput(state, torch.zeros(4, 1, 2), q_halt, q_cont)

    z = torch.zeros(4, 1, dtype=torch.long)
    carry = Carry(None, torch.tensor([16, 3, 5, 16], dtype=torch.int32), torch.zeros(4, dtype=torch.bool), z, z,
                  z[:, 0])
    target = continue_target(model, carry, n_supervision=16)
    # last step (steps >= N_sup): sigmoid(next q_halt); otherwise sigmoid(max(next q_halt, next q_continue))
    torch.testing.assert_close(target, torch.sigmoid(torch.tensor([1.0, -1.0, 0.5, 2.0])))
    assert seen == [False]


def test_single_z_trm():
    m = tiny(family="trm", single_z=True, n_cycles=3, n_latent=2, puzzle_emb_len=2)
    T, n = m.cfg.n_cycles, m.cfg.n_latent
    inputs, ids = batch()
    state = m.initial_state(2, "cpu")
    calls = []
    m.blocks[0].register_forward_hook(lambda mod, i, o: calls.append(o.requires_grad))
    out = m(state, inputs, ids)
    assert calls == [False] * ((T - 1) * (n + 1)) + [True] * (n + 1)  # gradient only through the last recursion
    assert torch.equal(out.state.y, out.state.z)  # the answer is read from the one latent
    _loss(out).backward()

    ref = copy.deepcopy(m)
    ref.zero_grad()
    x, z = ref.embed(inputs, ids), state.z
    for t in range(T):  # official trm_singlez: z <- net(z + x) n times, then z <- net(z)
        if t == T - 1:
            z = z.detach()
        for _ in range(n):
            z = ref.run(ref.blocks, z + x, 0.0)
        z = ref.run(ref.blocks, z, 0.0)
    ref_out = ref.readout(None, z)
    torch.testing.assert_close(ref_out.logits, out.logits)
    _loss(ref_out).backward()
    for p, q in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)


def test_hrm_trains_with_the_continue_loss(tmp_path, data_dir, monkeypatch):  # noqa: F811
    import ponder.trainer as T

    real, targets = T.act_loss, []

    def act_loss(out, labels, loss, weight, target):
        targets.append(target)
        return real(out, labels, loss, weight, target)

    monkeypatch.setattr(T, "act_loss", act_loss)
    hrm = ["model.family=hrm", "model.n_layers=1", "model.puzzle_emb_len=1", "model.act_continue=true",
           "train.ema=false"]
    run = train(tiny_run(data_dir, *hrm, "train.steps=3"), tmp_path / "r", progress=False)
    assert len(targets) == 3 and all(t is not None and t.shape == (16,) and ((t > 0) & (t < 1)).all() for t in targets)
    carry = checkpoint.load_state(run.checkpoint)["carry"]
    assert {"state.z_h", "state.z_l"} <= carry.keys()
    train(tiny_run(data_dir, *hrm, "train.steps=4"), tmp_path / "r", resume=True, progress=False)  # carry reloads
    assert checkpoint.list_checkpoints(tmp_path / "r")[-1].name == "step_00000004"
