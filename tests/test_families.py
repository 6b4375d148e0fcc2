"""Every shipped preset and every ablation field builds its model and runs one training step on CPU (the step the
trainer runs: ACT step, loss with the continue target where the model has one, backward, optimiser, sign-SGD)."""

import dataclasses

import pytest
import torch

from ponder.act import act_loss, act_step, continue_target, empty_carry, refill
from ponder.config import ModelConfig, TrainConfig, preset_names, resolve
from ponder.models import build_model
from ponder.optim import EMA, SignSGD, build_optimizer

VOCAB, SEQ, IDS = 12, 8, 5


def one_step(mc: ModelConfig, tc: TrainConfig, batch: int = 2) -> None:
    torch.manual_seed(0)
    seq = 2 * mc.segment_len if mc.family == "armt" else SEQ  # ARMT reads whole segments
    model = build_model(mc, VOCAB, seq, IDS)
    opt = build_optimizer(model, tc)
    emb = SignSGD(model.puzzle_emb, tc.puzzle_emb_lr, tc.puzzle_emb_weight_decay) if model.puzzle_emb else None
    ema = EMA(list(model.parameters()), tc.ema_rate) if tc.ema else None
    carry = refill(model, empty_carry(model, batch, seq, "cpu"), torch.randint(2, VOCAB, (batch, seq)),
                   torch.randint(2, VOCAB, (batch, seq)), torch.arange(batch) % IDS)
    before = [p.detach().clone() for p in model.parameters()]
    out, carry = act_step(model, carry, mc.n_supervision, mc.halt_exploration_prob, mc.halt_min_steps)
    target = continue_target(model, carry, mc.n_supervision) if mc.act_continue else None
    loss = act_loss(out, carry.labels, tc.loss, tc.halt_loss_weight, target)
    (loss.total / batch).backward()
    opt.step()
    if emb is not None:
        emb.step()
    if ema is not None:
        ema.update()
    assert torch.isfinite(loss.total)
    assert out.logits.shape == (batch, seq, VOCAB)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # the step changed weights
    if emb is not None:
        assert model.puzzle_emb.weight.abs().sum() > 0


@pytest.mark.parametrize("name", [n for n in preset_names() if not n.startswith("lm-")])  # lm-*: tests/test_lm_*
def test_every_preset_runs_one_step(name):
    """The preset's exact model and optimiser settings; only the sequence is shortened (the data is not built)."""
    cfg = resolve(name)
    one_step(cfg.model, dataclasses.replace(cfg.train, lr_warmup_steps=0))


TINY = dict(hidden=32, n_heads=2, n_layers=2, n_latent=2, n_cycles=2, n_supervision=2, puzzle_emb_len=2, loops=3,
            no_grad_loops=1)
ABLATIONS = {  # field -> values, per family; the comments in ponder/config.py cite the papers' figures
    "trm": [("single_z", True), ("act_continue", True), ("mixer", "mlp"), ("n_latent", 1), ("n_cycles", 1),
            ("pos_encoding", "learned"), ("puzzle_emb", False)],
    "hrm": [("one_step_grad", False), ("act_continue", False), ("n_cycles", 1)],
    "urm": [("ffn", "swiglu"), ("ffn", "conv_swiglu"), ("conv_placement", "attention"), ("conv_placement", "value"),
            ("activation", "relu"), ("activation", "gelu"), ("no_grad_loops", 0), ("conv_kernel", 3)],
    "transformer": [("n_layers", 4), ("ffn", "conv_swiglu")],
}
SEQUENCE = dict(hidden=32, n_heads=2, n_layers=2, n_supervision=1, puzzle_emb=False, puzzle_emb_len=0, mem_tokens=2,
                mem_dim=4, segment_len=4)
PER_TOKEN_ACT = [("act", "layer"), ("act", "model"), ("act_halting", "constant"), ("act_noise", 0.1),
                 ("act_max_hop", 2)]


@pytest.mark.parametrize("family,field,value", [(f, k, v) for f, items in ABLATIONS.items() for k, v in items])
def test_every_ablation_runs_one_step(family, field, value):
    extra = {"ffn": "conv_swiglu"} if field in ("conv_placement", "conv_kernel") else {}
    mc = ModelConfig(family=family, **{**TINY, **extra, field: value})
    one_step(mc, TrainConfig(lr_warmup_steps=0, lr=1e-3))


@pytest.mark.parametrize("family,field,value", [(f, k, v) for f in ("neox", "lstm", "mamba", "armt")
                                                for k, v in [("act", "off"), *PER_TOKEN_ACT]])
def test_every_sequence_model_and_act_variant_runs_one_step(family, field, value):
    act = {} if field == "act" else {"act": "layer"}
    one_step(ModelConfig(family=family, **{**SEQUENCE, **act, field: value}),
             TrainConfig(lr_warmup_steps=0, lr=1e-3, loss="softmax", halt_loss_weight=0.0, optimizer="adamw"))


@pytest.mark.parametrize("optimizer,ema", [("adamw", False), ("muon", True)])
def test_optimiser_and_ema_switches(optimizer, ema):
    one_step(ModelConfig(family="urm", **TINY), TrainConfig(optimizer=optimizer, ema=ema, lr_warmup_steps=0))
