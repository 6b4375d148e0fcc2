"""Deep supervision with adaptive computation time: the persistent-carry loop shared by every recursive model.

The official TRM/HRM code has no inner loop over the N_sup supervision steps. Instead a *carry* (model state, step
counter, halted flag and the example each slot holds) lives across optimiser steps: every training call runs ONE
supervision step for all slots and then one optimiser step. Slots that halted are reset to the initial state and
refilled with fresh examples; the others keep working on theirs. Halting in training: the step cap N_sup, or the
halting logit > 0 (TRM) / > the continue logit (HRM); with probability `halt_exploration_prob` a slot draws a minimum
number of steps from {halt_min_steps..N_sup} and cannot halt before it. In evaluation nothing halts early here;
adaptive halting at test time is read off the logits by the evaluator.

Difference from the official loop (documented in docs/models.md): the official loader hands over a full batch each
step and discards the rows of non-halted slots; ponder draws exactly as many new examples as there are halted
slots, so no example of the stream is skipped and the data position is exact for resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ponder import IGNORE


@dataclass
class Carry:
    state: object  # the model's State (e.g. TRM's y, z)
    steps: Tensor  # (B,) int32 supervision steps taken on the current example
    halted: Tensor  # (B,) bool: slot is free and takes a new example at the next step
    inputs: Tensor  # (B, L) long
    labels: Tensor  # (B, L) long, IGNORE where not scored
    puzzle_ids: Tensor  # (B,) long

    def tensors(self) -> dict[str, Tensor]:
        """Flat dict for saving; the model state's fields are prefixed with 'state.'."""
        out = {k: getattr(self, k) for k in ("steps", "halted", "inputs", "labels", "puzzle_ids")}
        out.update({f"state.{k}": v for k, v in vars(self.state).items()})
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor], state_cls: type) -> "Carry":
        state = state_cls(**{k[6:]: v for k, v in t.items() if k.startswith("state.")})
        return cls(state, t["steps"], t["halted"], t["inputs"], t["labels"], t["puzzle_ids"])


def empty_carry(model, batch_size: int, seq_len: int, device) -> Carry:
    """All slots halted, so the first step fills every one."""
    z = lambda *s: torch.zeros(*s, dtype=torch.long, device=device)  # noqa: E731
    return Carry(model.initial_state(batch_size, device), torch.zeros(batch_size, dtype=torch.int32, device=device),
                 torch.ones(batch_size, dtype=torch.bool, device=device), z(batch_size, seq_len), z(batch_size, seq_len),
                 z(batch_size))


def refill(model, carry: Carry, inputs: Tensor, labels: Tensor, puzzle_ids: Tensor) -> Carry:
    """Put new examples (one row per halted slot, in slot order) into the halted slots and reset their state."""
    h = carry.halted
    idx = h.nonzero(as_tuple=True)[0]
    assert idx.numel() == inputs.shape[0], f"refill needs {idx.numel()} examples, got {inputs.shape[0]}"
    new_inputs, new_labels, new_ids = carry.inputs.clone(), carry.labels.clone(), carry.puzzle_ids.clone()
    new_inputs[idx], new_labels[idx], new_ids[idx] = inputs, labels, puzzle_ids
    return Carry(model.reset(carry.state, h), torch.where(h, 0, carry.steps), h, new_inputs, new_labels, new_ids)


def act_step(model, carry: Carry, n_supervision: int, exploration_prob: float, min_steps: int,
             generator: torch.Generator | None = None, shard: tuple[int, int] = (0, 1)):
    """One supervision step for every slot. Returns (output, new carry); output.state is the pre-halting state.
    shard = (rank, processes): the carry is rank's slice of the global batch; the exploration draws are made for
    the global batch and sliced, so that every slot gets the draws it would get in one process."""
    out = model(carry.state, carry.inputs, carry.puzzle_ids)
    steps = carry.steps + 1
    with torch.no_grad():
        halted = steps >= n_supervision
        if model.training and n_supervision > 1:
            q_halt = out.q_halt if out.q_continue is None else out.q_halt - out.q_continue
            halted = halted | (q_halt > 0)
            b, (rank, size) = steps.shape[0], shard
            mine = slice(rank * b, (rank + 1) * b)
            explore = torch.rand(b * size, generator=generator, device=steps.device)[mine] < exploration_prob
            floor = torch.randint(min_steps, n_supervision + 1, (b * size,), generator=generator,
                                  device=steps.device)[mine]
            halted = halted & (steps >= explore * floor)
    return out, Carry(out.state, steps, halted, carry.inputs, carry.labels, carry.puzzle_ids)


@torch.no_grad()
def continue_target(model, carry: Carry, n_supervision: int) -> Tensor:
    """HRM's Q-learning target for q_continue (PQN-style: no target network, no replay). A second forward on the new
    (detached, pre-halting) carry gives the next step's logits; target = sigmoid(next q_halt) when this was the last
    allowed step, else sigmoid(max(next q_halt, next q_continue)). Official: outputs["target_q_continue"]."""
    nxt = model(carry.state, carry.inputs, carry.puzzle_ids)
    last = carry.steps >= n_supervision
    return torch.sigmoid(torch.where(last, nxt.q_halt, torch.maximum(nxt.q_halt, nxt.q_continue)))


def stablemax_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-token CE under stablemax, float64: s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0); p = s(x) / sum s."""
    x = logits.double()
    s = torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)
    logp = torch.log(s / s.sum(-1, keepdim=True))
    valid = labels != IGNORE
    picked = logp.gather(-1, torch.where(valid, labels, 0).unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), ignore_index=IGNORE,
                           reduction="none").view(labels.shape)


LOSSES = {"stablemax": stablemax_cross_entropy, "softmax": softmax_cross_entropy}


@dataclass
class LossOutput:
    total: Tensor  # scalar: sum over the batch (divide by the global batch size before backward)
    lm: Tensor
    halt: Tensor
    correct: Tensor  # (B, L) bool token correct (masked)
    seq_correct: Tensor  # (B,) bool every scored token correct
    hops: Tensor | None = None  # (B, units) mean per-token ACT hops (the 1dCA sequence models with model.act)


def act_loss(out, labels: Tensor, loss: str = "stablemax", halt_weight: float = 0.5,
             continue_target: Tensor | None = None) -> LossOutput:
    """lm = sum over sequences of the token-mean CE; halt = BCE(q_halt, sequence exactly right), summed;
    total = lm + halt_weight * (halt [+ continue BCE when the model has a continue head]) [+ the model's per-example
    aux_loss, summed: per-token ACT's ponder cost]."""
    mask = labels != IGNORE
    counts = mask.sum(-1)
    with torch.no_grad():
        correct = mask & (out.logits.argmax(-1) == labels)
        seq_correct = correct.sum(-1) == counts
    lm = (LOSSES[loss](out.logits, labels) / counts.clamp_min(1).unsqueeze(-1)).sum()
    halt = F.binary_cross_entropy_with_logits(out.q_halt, seq_correct.to(out.q_halt.dtype), reduction="sum")
    q = halt
    if continue_target is not None:
        q = q + F.binary_cross_entropy_with_logits(out.q_continue, continue_target, reduction="sum")
    total = lm + halt_weight * q
    if out.aux_loss is not None:
        total = total + out.aux_loss.sum()
    hops = out.hops.detach() if out.hops is not None else None
    return LossOutput(total, lm.detach(), halt.detach(), correct, seq_correct, hops)
