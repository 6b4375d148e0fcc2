"""Optimisers, schedule and EMA, in plain PyTorch (no CUDA-only packages).

- `AdamAtan2`: the update of the `adam-atan2` package (0.0.3) the official code uses (a fused CUDA-only kernel there):
      p <- p (1 - lr wd);  m <- lerp(m, g, 1 - b1);  v <- b2 v + (1 - b2) g^2
      p <- p - lr / (1 - b1^t) atan2(m, sqrt(v) / sqrt(1 - b2^t))
  The first moment's bias correction scales the step size, outside the atan2, as in the package's own test oracle
  (its first update is ~lr, not 0.785 lr). No eps and no a/b scaling (lucidrains' adam-atan2-pytorch defaults to
  a=1.27, b=1 and differs). Checked against the package's oracle values (tests/test_parity.py). Written with
  torch._foreach ops: the small configs are dominated by per-tensor call overhead otherwise.
- `build_optimizer`: train.optimizer -> AdamAtan2, AdamW, or Muon on the hidden weight matrices + AdamAtan2 on the
  rest (`Combined` makes the pair look like one optimiser to the training loop and the checkpoint).
- `SignSGD`: the sparse puzzle-embedding update, p <- p (1 - lr wd) - lr sign(g), on the batch's rows only.
- `lr_at`: linear warm-up from 0, then cosine towards lr_min_ratio * lr (ratio 1.0 = constant, the official default).
- `EMA`: shadow <- rate * shadow + (1 - rate) * param, on trainable parameters only (buffers are not averaged).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ponder import distributed
from ponder.config import TrainConfig
from ponder.models.layers import SparseEmbedding


class AdamAtan2(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.1):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            b1, b2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            for p in params:
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
            grads = [p.grad for p in params]
            m = [self.state[p]["exp_avg"] for p in params]
            v = [self.state[p]["exp_avg_sq"] for p in params]
            step = self.state[params[0]]["step"] + 1
            for p in params:
                self.state[p]["step"] = step
            t = step.item()
            if wd != 0:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_lerp_(m, grads, 1 - b1)
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
            c1, c2 = 1 - b1**t, math.sqrt(1 - b2**t)
            den = torch._foreach_sqrt(v)
            torch._foreach_div_(den, c2)
            for p, a, b in zip(params, m, den):  # the first moment's correction scales the step, outside atan2
                p.add_(torch.atan2(a, b), alpha=-lr / c1)


def newton_schulz_float32(grad: Tensor, ns_coefficients: tuple[float, float, float], ns_steps: int,
                           eps: float) -> Tensor:
    """torch.optim._muon._zeropower_via_newtonschulz with the iteration in float32 instead of bfloat16."""
    a, b, c = ns_coefficients
    x = grad.float()
    if grad.size(0) > grad.size(1):
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if grad.size(0) > grad.size(1) else x


class Muon(torch.optim.Muon):
    """torch.optim.Muon, except that on CPU its Newton-Schulz iteration runs in float32. torch runs it in bfloat16,
    which is fast on GPUs but crawls on CPUs without bf16 matrix units: on this project's AMD EPYC machine bf16 matmuls
    run at 0.2-0.8 GFLOP/s against 50-60 in float32, and one Muon step of URM's ARC config took 126 s (under 1 s in
    float32). The swap goes through torch's private module function, restored after every step."""

    def step(self, closure=None):
        if not any(p.device.type == "cpu" for g in self.param_groups for p in g["params"]):
            return super().step(closure)
        from torch.optim import _muon

        original = _muon._zeropower_via_newtonschulz
        _muon._zeropower_via_newtonschulz = newton_schulz_float32
        try:
            return super().step(closure)
        finally:
            _muon._zeropower_via_newtonschulz = original


class Combined:
    """Several optimisers over disjoint parameters behind one interface, so train.py keeps a single code path."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:  # the groups of all of them (the loop writes the scheduled lr into each)
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)


def split_hidden(model: nn.Module, heads: tuple[nn.Module, ...]) -> tuple[list[tuple[str, nn.Parameter]],
                                                                         list[tuple[str, nn.Parameter]]]:
    """(Muon, the rest) as (name, parameter) pairs: Muon takes the 2-D weight of every nn.Linear except the `heads`;
    the rest is everything else (embeddings, heads, norms, convs, biases). Each trainable parameter once, so a tied
    head that shares the embedding tensor stays with the embedding."""
    muon, rest, seen = [], [], set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            hidden = isinstance(module, nn.Linear) and p.ndim == 2 and all(module is not h for h in heads)
            (muon if hidden else rest).append((f"{mname}.{pname}", p))
    return muon, rest


def build_optimizer(model: nn.Module, tc: TrainConfig) -> torch.optim.Optimizer | Combined:
    """The dense-weight optimiser of train.optimizer (the puzzle table has its own `SignSGD`).

    "muon": torch.optim.Muon (Nesterov momentum 0.95, 5 Newton-Schulz steps, decoupled wd) on the 2-D weights of the
    hidden linear layers, with the update scaled to AdamW's RMS (lr * 0.2 * sqrt(max(fan_out, fan_in)), Moonlight's
    `match_rms_adamw`, as URM's ARC-2 script); AdamAtan2 on the rest (token/position embeddings, lm_head, q_head,
    conv weights and biases). The official URM Muon differs: it also takes the embedding and heads, uses AdamW for
    the rest and a per-step Newton-Schulz coefficient schedule (torch uses fixed (3.4445, -4.775, 2.0315)).
    """
    params = list(model.parameters())
    kw = dict(lr=tc.lr, weight_decay=tc.weight_decay)
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(params, betas=(tc.beta1, tc.beta2), **kw)
    if tc.optimizer == "adam_atan2":
        return AdamAtan2(params, betas=(tc.beta1, tc.beta2), **kw)
    hidden, rest = ([p for _, p in group] for group in split_hidden(model, model.output_heads()))
    return Combined(Muon(hidden, momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw", **kw),
                    AdamAtan2(rest, betas=(tc.beta1, tc.beta2), **kw))


class SignSGD:
    """Sign-SGD for a `SparseEmbedding`: touches only the rows of the last training batch."""

    def __init__(self, emb: SparseEmbedding, lr: float, weight_decay: float):
        self.emb, self.lr, self.weight_decay = emb, lr, weight_decay

    @torch.no_grad()
    def step(self) -> None:
        local, ids = self.emb.local, self.emb.local_ids
        if local is None or local.grad is None:
            return
        # under torchrun: the rows of every rank, in rank order (= the global batch's order in one process), so
        # every rank applies the same update and the tables stay equal without broadcasting them
        grad, ids = distributed.gather_rows(local.grad), distributed.gather_rows(ids)
        uniq, inverse = ids.unique(return_inverse=True)
        g = torch.zeros(uniq.shape[0], local.shape[1], dtype=grad.dtype, device=local.device)
        g.index_add_(0, inverse, grad)  # sum of the grads of each id in the batch
        w = self.emb.weight
        rows = w[uniq] * (1 - self.lr * self.weight_decay) - self.lr * torch.sign(g)
        w[uniq] = rows.to(w.dtype)
        self.emb.local = self.emb.local_ids = None


def set_lr(step: int, tc, opt, emb_opt=None) -> float:
    """Step `step`'s learning rate (train.lr on the schedule of `lr_at`) set on every parameter group of `opt`, and
    the sparse puzzle table's (train.puzzle_emb_lr, same schedule) on `emb_opt`; returns the dense one."""
    lr = lr_at(step, tc.lr, tc.lr_warmup_steps, tc.decay_steps, tc.lr_min_ratio, tc.lr_counter,
               tc.lr_decay)
    for group in opt.param_groups:
        group["lr"] = lr
    if emb_opt is not None:
        emb_opt.lr = lr_at(step, tc.puzzle_emb_lr, tc.lr_warmup_steps, tc.decay_steps, tc.lr_min_ratio,
                           tc.lr_counter, tc.lr_decay)
    return lr


def lr_at(step: int, base: float, warmup: int, total: int, min_ratio: float = 1.0, counter: str = "before",
          decay: str = "cosine") -> float:
    """Learning rate of optimiser step `step` (1-based): linear warm-up from 0, then `decay` (cosine or linear) from
    base to base * min_ratio at `total`. counter "before" (TRM/HRM, whose loop increments its step before computing
    the lr) schedules it at `step`; "after" (URM, which increments after the update) at step - 1, so its first
    update has lr 0 under warm-up."""
    step = step if counter == "before" else step - 1
    if step < warmup:
        return base * step / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if decay == "cosine":
        return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    return base * (min_ratio + (1 - min_ratio) * (1 - progress))


class EMA:
    def __init__(self, params: list[Tensor], rate: float):
        self.params = list(params)
        self.rate = rate
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - self.rate)

    def state_dict(self) -> list[Tensor]:
        """The shadow weights on the CPU (what state.pt holds under "ema")."""
        return [t.cpu() for t in self.shadow]

    def load_state_dict(self, shadow: list[Tensor]) -> None:
        self.shadow = [t.to(p.device) for t, p in zip(shadow, self.params, strict=True)]
