"""The persistent-carry ACT loop (ponder.act) on scripted models: refilled slots restart from the initial state,
training halts at N_sup at the latest, every rank gets its own exploration draws, and ignored labels count nowhere."""

from dataclasses import dataclass

import numpy as np
import torch

from ponder.act import Carry, act_loss, act_step, empty_carry, refill
from ponder.config import resolve
from ponder.models import build_model
from ponder.models.base import StepOutput
from ponder.tasks.batches import IGNORE, batch_tensors
from ponder.tasks.dataset import from_pairs


def tiny_model():
    torch.manual_seed(0)
    return build_model(resolve("demo", ["model.hidden=16", "model.n_heads=2"]).model, 6, 5)


def test_refilled_slots_restart_from_the_initial_state():
    model = tiny_model()
    carry = empty_carry(model, 4, 5, "cpu")
    worked = type(carry.state)(*(torch.randn_like(v) for v in vars(carry.state).values()))  # states mid-way
    carry = Carry(worked, torch.tensor([3, 1, 5, 2], dtype=torch.int32), torch.tensor([True, False, True, False]),
                  carry.inputs, carry.labels, carry.puzzle_ids)
    new = refill(model, carry, torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long),
                 torch.zeros(2, dtype=torch.long))
    fresh = model.initial_state(4, "cpu")
    for name, value in vars(new.state).items():
        assert torch.equal(value[[0, 2]], getattr(fresh, name)[[0, 2]]), name  # halted: the initial state again
        assert torch.equal(value[[1, 3]], getattr(worked, name)[[1, 3]]), name  # working: untouched
    assert new.steps.tolist() == [0, 1, 0, 2] and new.inputs[[0, 2]].eq(1).all() and new.inputs[[1, 3]].eq(0).all()


@dataclass
class Count:
    step: torch.Tensor


class Scripted(torch.nn.Module):
    """Halting logits chosen by the test; logits irrelevant."""

    def __init__(self, q_halt: float):
        super().__init__()
        self.q = q_halt

    def forward(self, state, inputs, puzzle_ids):
        b = inputs.shape[0]
        return StepOutput(state, torch.zeros(b, inputs.shape[1], 3), torch.full((b,), self.q))


def scripted_carry(batch: int) -> Carry:
    z = torch.zeros(batch, 4, dtype=torch.long)
    return Carry(Count(torch.zeros(batch)), torch.zeros(batch, dtype=torch.int32), torch.zeros(batch, dtype=torch.bool),
                 z, z, torch.zeros(batch, dtype=torch.long))


def test_training_halts_at_n_sup_at_the_latest():
    model = Scripted(q_halt=-3.0).train()  # the halting head never fires: only the cap ends an example
    carry = scripted_carry(3)
    for step in range(1, 6):
        _, carry = act_step(model, carry, 5, 0.0, 2)
        assert carry.halted.tolist() == [step == 5] * 3 and carry.steps.tolist() == [step] * 3
    model = Scripted(q_halt=2.0).train()  # fires at once: halts after one step unless exploration holds it
    _, carry = act_step(model, scripted_carry(3), 5, 0.0, 2)
    assert carry.halted.all()


def test_every_rank_draws_its_own_exploration_floors():
    """The halting head fires everywhere, exploration always on: a slot halts only once it reaches its random floor.
    Rank r of 2 must get the floors of rows [r*B, (r+1)*B) of the global draw, as the single process gives them."""
    model = Scripted(q_halt=2.0).train()
    whole = scripted_carry(8)
    gen = torch.Generator().manual_seed(5)
    halts = []
    for _ in range(6):
        _, whole = act_step(model, whole, 8, 1.0, 2, gen)
        halts.append(whole.halted.clone())
    assert len({tuple(h.tolist()) for h in halts}) > 2  # floors differ between slots: the draws matter
    for rank in range(2):
        part = scripted_carry(4)
        gen = torch.Generator().manual_seed(5)
        for s in range(6):
            _, part = act_step(model, part, 8, 1.0, 2, gen, shard=(rank, 2))
            assert torch.equal(part.halted, halts[s][rank * 4:(rank + 1) * 4]), (rank, s)


def test_ignored_labels_count_nowhere():
    """Label 0 (the dataset's ignore id) becomes IGNORE in a batch; whatever the model says there changes neither
    the loss nor the per-token or whole-answer correctness."""
    arrays = from_pairs(np.array([[1, 2, 3, 4]], np.uint8), np.array([[0, 2, 0, 1]], np.uint8))
    _, labels, _ = batch_tensors(arrays, np.array([0]), 0, "cpu")
    assert labels.tolist() == [[IGNORE, 2, IGNORE, 1]]
    logits = torch.randn(1, 4, 3)
    logits[0, 1, 2], logits[0, 3, 1] = 9.0, 9.0  # the two scored positions right
    base = act_loss(StepOutput(None, logits, torch.zeros(1)), labels)
    noisy = logits.clone()
    noisy[0, [0, 2]] = torch.randn(2, 3) * 50  # anything at the ignored positions
    other = act_loss(StepOutput(None, noisy, torch.zeros(1)), labels)
    assert torch.equal(base.total, other.total) and torch.equal(base.lm, other.lm)
    assert base.seq_correct.tolist() == other.seq_correct.tolist() == [True]
    assert base.correct.tolist() == [[False, True, False, True]]
