"""Loss and optimiser maths against hand-computed values."""

import math

import torch

from ponder.act import act_loss, stablemax_cross_entropy
from ponder.models.layers import SparseEmbedding
from ponder.models.base import StepOutput
from ponder.optim import EMA, AdamAtan2, SignSGD, lr_at
from ponder.tasks.batches import IGNORE


def test_stablemax_hand_values():
    # s(1) = 2, s(-1) = 1/2, s(0) = 1 -> p = (2, .5, 1) / 3.5
    logits = torch.tensor([[[1.0, -1.0, 0.0], [1.0, -1.0, 0.0]]])
    ce = stablemax_cross_entropy(logits, torch.tensor([[0, IGNORE]]))
    assert ce.dtype == torch.float64
    assert math.isclose(ce[0, 0].item(), -math.log(2 / 3.5), rel_tol=1e-12)
    assert ce[0, 1].item() == 0.0  # ignored position


def test_act_loss_hand_values():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]],  # all right
                           [[2.0, 0.0], [2.0, 0.0], [0.0, 0.0]]])  # second token wrong, third ignored
    labels = torch.tensor([[0, 1, 1], [0, 1, IGNORE]])
    q = torch.tensor([0.3, -0.2])
    loss = act_loss(StepOutput(None, logits, q), labels, "stablemax", 0.5)
    s = lambda x: x + 1 if x >= 0 else 1 / (1 - x)  # noqa: E731
    ce_right = -math.log(s(2) / (s(2) + s(0)))
    ce_wrong = -math.log(s(0) / (s(2) + s(0)))
    lm = (3 * ce_right) / 3 + (ce_right + ce_wrong) / 2  # token-mean per sequence, summed over the batch
    bce = lambda x, t: -(t * math.log(1 / (1 + math.exp(-x))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-x))))  # noqa: E731
    halt = bce(0.3, 1.0) + bce(-0.2, 0.0)
    assert math.isclose(loss.lm.item(), lm, rel_tol=1e-9)
    assert math.isclose(loss.halt.item(), halt, rel_tol=1e-6)
    assert math.isclose(loss.total.item(), lm + 0.5 * halt, rel_tol=1e-6)
    assert loss.seq_correct.tolist() == [True, False]


def test_adam_atan2_hand_values():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = AdamAtan2([p], lr=0.1, betas=(0.9, 0.95), weight_decay=0.1)
    expected, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate([0.5, -1.0, 0.25], start=1):
        p.grad = torch.tensor([g])
        opt.step()
        expected *= 1 - 0.1 * 0.1  # decoupled decay lr * wd
        m = 0.9 * m + 0.1 * g
        v = 0.95 * v + 0.05 * g * g
        # the package's update: the first moment's correction scales the step, outside atan2; no eps, no a/b
        expected -= 0.1 / (1 - 0.9**t) * math.atan2(m, math.sqrt(v) / math.sqrt(1 - 0.95**t))
        assert math.isclose(p.item(), expected, rel_tol=1e-6), (t, p.item(), expected)


def test_sign_sgd_touches_only_batch_rows():
    emb = SparseEmbedding(6, 3)
    with torch.no_grad():
        emb.weight.copy_(torch.arange(18.0).view(6, 3))
    before = emb.weight.clone()
    emb.train()
    ids = torch.tensor([1, 4, 1])
    out = emb(ids)
    (out * torch.tensor([[1.0, -1.0, 0.0], [2.0, 2.0, -2.0], [-3.0, 0.5, 0.0]])).sum().backward()
    SignSGD(emb, lr=0.5, weight_decay=0.1).step()
    # id 1 summed grad = (1-3, -1+0.5, 0) = (-2, -0.5, 0) -> sign (-1, -1, 0)
    expected1 = before[1] * (1 - 0.05) - 0.5 * torch.tensor([-1.0, -1.0, 0.0])
    expected4 = before[4] * (1 - 0.05) - 0.5 * torch.tensor([1.0, 1.0, -1.0])
    torch.testing.assert_close(emb.weight[1], expected1)
    torch.testing.assert_close(emb.weight[4], expected4)
    untouched = [0, 2, 3, 5]
    assert torch.equal(emb.weight[untouched], before[untouched])


def test_lr_schedule():
    assert lr_at(1, 1.0, 10, 100) == 0.1
    assert lr_at(10, 1.0, 10, 100) == 1.0 and lr_at(90, 1.0, 10, 100) == 1.0  # min_ratio 1 = constant
    assert math.isclose(lr_at(55, 1.0, 10, 100, 0.0), 0.5, rel_tol=1e-9)  # halfway through the cosine
    assert math.isclose(lr_at(100, 1.0, 10, 100, 0.1), 0.1, rel_tol=1e-9)
    # linear decay (the 1dCA reference's schedule): halfway from 1 to 0.1 is 0.55
    assert math.isclose(lr_at(55, 1.0, 10, 100, 0.1, decay="linear"), 0.55, rel_tol=1e-9)
    assert lr_at(100, 1.0, 10, 100, 0.0, decay="linear") == 0.0 and lr_at(10, 1.0, 10, 100, 0.0, decay="linear") == 1.0


def test_ema():
    p = torch.nn.Parameter(torch.tensor([0.0]))
    ema = EMA([p], 0.9)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update()
    ema.update()
    assert math.isclose(ema.shadow[0].item(), 1 - 0.9**2, rel_tol=1e-6)


def test_muon_float32_newton_schulz_matches_torch():
    """ponder's Muon runs torch's Newton-Schulz in float32 on CPU: the same orthogonalisation as torch's bf16 one
    (to bf16 precision), and one step moves the weights like torch.optim.Muon does."""
    from torch.optim import _muon

    from ponder.optim import Muon, newton_schulz_float32

    g = torch.Generator().manual_seed(0)
    for shape in ((64, 32), (32, 64)):
        grad = torch.randn(*shape, generator=g)
        ours = newton_schulz_float32(grad, (3.4445, -4.775, 2.0315), 5, 1e-7)
        ref = _muon._zeropower_via_newtonschulz(grad, (3.4445, -4.775, 2.0315), 5, 1e-7).float()
        assert ours.dtype == torch.float32 and ours.shape == shape
        assert torch.allclose(ours, ref, atol=0.05) and (ours - ref).abs().mean() < 0.01
        s = torch.linalg.svdvals(ours)  # orthogonalised: singular values pushed into roughly [0.5, 1.5]
        assert s.min() > 0.3 and s.max() < 1.6
    w0 = torch.randn(48, 24, generator=g)
    grads = [torch.randn(48, 24, generator=g) for _ in range(3)]
    moved = []
    for cls in (Muon, torch.optim.Muon):
        w = torch.nn.Parameter(w0.clone())
        opt = cls([w], lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
        for gr in grads:
            w.grad = gr.clone()
            opt.step()
        moved.append(w.detach() - w0)
    assert _muon._zeropower_via_newtonschulz is not newton_schulz_float32  # restored after the step
    cos = torch.nn.functional.cosine_similarity(moved[0].flatten(), moved[1].flatten(), dim=0)
    assert cos > 0.999 and torch.allclose(moved[0], moved[1], atol=2e-3)


def test_the_built_muon_matches_adamw_rms():
    """train.optimizer=muon: the optimiser ponder builds scales Muon's orthogonalised update to AdamW's RMS
    (Moonlight's match_rms_adamw: lr * 0.2 * sqrt(max(rows, cols))), so a square hidden matrix moves by an RMS of
    about 0.2 lr; torch's default adjustment would move it by lr / sqrt(rows) (0.0625 lr at 256)."""
    from ponder.config import TrainConfig
    from ponder.optim import Combined, build_optimizer

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Linear(256, 256, bias=False)
            self.lm_head, self.q_head = torch.nn.Linear(256, 4, bias=False), torch.nn.Linear(256, 2)

        def output_heads(self):
            return self.lm_head, self.q_head

    torch.manual_seed(0)
    model = Tiny()
    opt = build_optimizer(model, TrainConfig(optimizer="muon", lr=1e-3, weight_decay=0.0))
    assert isinstance(opt, Combined)
    muon = opt.optimizers[0]
    assert [p for g in muon.param_groups for p in g["params"]] == [model.hidden.weight]  # heads go to AdamAtan2
    before = model.hidden.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    rms = (model.hidden.weight.detach() - before).pow(2).mean().sqrt().item()
    assert 0.12 < rms / 1e-3 < 0.3, rms / 1e-3
