"""Training a retrofitted recurrent LM: a plain loop, in a fixed order per optimiser step:
phase/data -> r_bar (curriculum) -> depth (n, k) -> lr -> grad_accum x (forward n+k loops, CE, backward) -> clip ->
step -> log -> checkpoint.

- Model: `load_base(lm.base)` + surgery (`RecurrentLM`, prelude/core/coda index ranges of lm.*).
- Depth: `ponder.lm.schedule` (Poisson-log-normal draw seeded by lm.depth_seed + step; curriculum on r_bar). All
  micro-batches of a step share one depth, as all ranks do in the official lockstep code.
- Optimiser (reference 2.4): Muon (torch.optim.Muon: Nesterov 0.95, 5 Newton-Schulz steps, update scaled by
  sqrt(max(1, rows/cols)) = KellerJordan's) on every 2-D `nn.Linear` weight but the lm_head, so all attention/MLP
  matrices of prelude, core and coda and the adapter; AdamW (betas train.beta1/2, eps 1e-8) on embeddings, lm_head,
  norms and biases; one decoupled weight decay (train.weight_decay, official 1e-4) for both. `ponder.optim.Combined`
  makes the pair one optimiser for the loop and the checkpoint.
- lr: `ponder.optim.lr_at` on both base lrs (lm.muon_lr, lm.adam_lr): linear warm-up over train.lr_warmup_steps,
  then cosine to train.lr_min_ratio (1.0 = constant; the Llama pretrained-init runs used no cooldown).
- Data: phase 1 = lm.healing_steps steps of packed text from lm.healing_data, then GSM8K (lm.task_data) examples
  with the loss on the answer only (`ponder.lm.data`). Both streams are seeded and resumable.
- Run directory, logs, resume point and the loop skeleton (budget, progress, checkpoint cadence, Ctrl-C saves at a
  step boundary, a NaN loss stops the run and keeps the last good checkpoint): the run layer `ponder.run`, shared
  with the puzzle trainer. Checkpoints: `ponder.checkpoint` (model weights in safetensors; optimiser, state-noise
  generator, data positions, step in state.pt), so `--resume` continues bit-identically on CPU
  (tests/test_lm_train.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ponder import IGNORE, UserError, checkpoint, runtime
from ponder.config import Config, LmConfig, parse_layers
from ponder.lm.data import (IndexStream, collate, load_documents, load_gsm8k, pack_documents, pad_id,
                            task_example)
from ponder.lm.schedule import mean_recurrence_at, sample_depth
from ponder.optim import Combined, Muon, lr_at, split_hidden
from ponder.run import (Loop, Meter, Resumable, Run, RunLog, check_finite, own_run, resume_point,
                        resumed_precision)

# the LmConfig fields that define the weights: a resumed run must keep them
MODEL_FIELDS = ("base", "prelude", "core", "coda", "state_std", "adapter_init")


def build_lm(lc: LmConfig):
    """Base model + tokenizer from lm.base, cut into prelude / core / coda -> (RecurrentLM, tokenizer)."""
    from ponder.lm.load import load_base
    from ponder.lm.model import RecurrentLM

    base, tokenizer = load_base(lc.base)
    sections = _sections(lc, base.config.num_hidden_layers)
    model = RecurrentLM(base, sections["prelude"], sections["core"], sections["coda"], state_std=lc.state_std,
                        adapter_init=lc.adapter_init)
    return model, tokenizer


def _sections(lc: LmConfig, n_layers: int) -> dict[str, list[int]]:
    """lm.prelude / core / coda as layer indices, checked against the base's layer count and for overlap."""
    sections = {name: parse_layers(getattr(lc, name), f"lm.{name}") for name in ("prelude", "core", "coda")}
    for name, idx in sections.items():
        bad = [i for i in idx if i >= n_layers]
        if bad:
            raise UserError(f"lm.{name}={getattr(lc, name)!r}: layer {bad[0]} does not exist; {lc.base} has "
                            f"{n_layers} layers (0-{n_layers - 1})")
    used = [i for idx in sections.values() for i in idx]
    if len(set(used)) != len(used):
        raise UserError(f"lm.prelude/core/coda overlap ({lc.prelude} / {lc.core} / {lc.coda}); each base layer may "
                        f"go to one section only")
    return sections


def lm_weight_count(lc: LmConfig) -> tuple[int, int]:
    """(weights of the retrofitted model, of the base model), from the base's config alone: both are built on the
    meta device (no memory, no weights read), the retrofit by the same surgery as training."""
    from transformers import AutoModelForCausalLM

    from ponder.lm.load import base_config
    from ponder.lm.model import RecurrentLM

    config = base_config(lc.base)
    sections = _sections(lc, config.num_hidden_layers)
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(config)
        n_base = sum(p.numel() for p in base.parameters())
        model = RecurrentLM(base, sections["prelude"], sections["core"], sections["coda"], state_std=lc.state_std,
                            adapter_init=lc.adapter_init)
    return sum(p.numel() for p in model.parameters()), n_base


def build_lm_optimizer(model: nn.Module, cfg: Config) -> Combined:
    tc, lc = cfg.train, cfg.lm
    muon, adam = split_hidden(model, (model.lm_head,))  # the adapter and every attention/MLP matrix -> Muon
    return Combined(Muon([p for _, p in muon], lr=lc.muon_lr, weight_decay=tc.weight_decay, momentum=0.95,
                         nesterov=True),
                    torch.optim.AdamW([p for _, p in adam], lr=lc.adam_lr, betas=(tc.beta1, tc.beta2), eps=1e-8,
                                      weight_decay=tc.weight_decay))


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean next-token CE (in float32) over the labelled positions, and their count. logits (B, T, V), labels (B, T);
    position t predicts labels[t + 1]."""
    targets = labels[:, 1:].reshape(-1)
    count = int((targets != IGNORE).sum())
    ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)), targets, ignore_index=IGNORE,
                         reduction="sum")
    return ce / max(1, count), count


class Batches:
    """The two data phases behind one `next(step)`: packed text rows for steps 1..healing_steps, then GSM8K."""

    def __init__(self, cfg: Config, tokenizer):
        lc, seed = cfg.lm, cfg.train.seed
        if not lc.task_data and lc.healing_steps < cfg.train.steps:
            raise UserError("lm.task_data is empty: give the GSM8K train JSONL, e.g. "
                            "lm.task_data=../shared/data/gsm8k/train.jsonl")
        self.batch_size, self.healing_steps, self.pad = cfg.train.batch_size, lc.healing_steps, pad_id(tokenizer)
        self.rows = pack_documents(load_documents(lc.healing_data), tokenizer, lc.seq_len) if lc.healing_steps else None
        self.examples = []
        if lc.task_data:
            examples = [task_example(tokenizer, p, lc.seq_len) for p in load_gsm8k(lc.task_data)]
            # a prompt that fills seq_len leaves no answer token to learn from: skip it, and say so
            self.examples = [e for e in examples if any(t != IGNORE for t in e.labels[1:])]
            if not self.examples:
                raise UserError(f"lm.seq_len={lc.seq_len} is shorter than every prompt of {lc.task_data}")
            if len(self.examples) < len(examples):
                print(f"note: {len(examples) - len(self.examples)} of {len(examples)} examples of {lc.task_data} "
                      f"have no answer token within lm.seq_len={lc.seq_len} and are skipped")
        self.streams = {"healing": IndexStream(len(self.rows), seed) if self.rows is not None else None,
                        "task": IndexStream(len(self.examples), seed + 1) if self.examples else None}

    def phase(self, step: int) -> str:
        return "healing" if step <= self.healing_steps else "task"

    def next(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input ids, labels), each (B, T), for a micro-batch of optimiser step `step` (1-based)."""
        phase = self.phase(step)
        idx = self.streams[phase].take(self.batch_size)
        if phase == "healing":
            ids = self.rows[idx]
            return ids, ids.clone()
        return collate([self.examples[i] for i in idx], self.pad)

    def state_dict(self) -> dict:
        return {k: s.state_dict() for k, s in self.streams.items() if s is not None}

    def load_state_dict(self, state: dict) -> None:
        for k, s in state.items():
            self.streams[k].load_state_dict(s)


def _unshared(sd: dict) -> dict:
    """safetensors refuses tensors that share memory (a tied lm_head): clone the second and later views."""
    seen, out = set(), {}
    for k, v in sd.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.detach().clone() if ptr in seen else v
        seen.add(ptr)
    return out


def train_lm(cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True,
             until: int | None = None) -> Run:
    """Train (or resume) the retrofit run in `run_dir`, owning it for the time (`own_run`); `until` stops this call
    at that step (checkpointed)."""
    with own_run(Path(run_dir), fresh=None if resume else cfg):
        return _train_lm(cfg, Path(run_dir), resume, progress, until)


def _train_lm(cfg: Config, run_dir: Path, resume: bool, progress: bool, until: int | None) -> Run:
    tc, lc = cfg.train, cfg.lm
    device = runtime.resolve_device(tc.device)
    runtime.set_threads(tc.threads, device)
    point = resume_point(run_dir, cfg, keep=(*(f"lm.{f}" for f in MODEL_FIELDS), "train.batch_size")) if resume else None
    cfg = runtime.settle_dtype(resumed_precision(cfg, point), device)
    tc = cfg.train
    torch.manual_seed(tc.seed)
    model, tokenizer = build_lm(lc)
    batches = Batches(cfg, tokenizer)  # bad data files fail before anything is written
    model.to(device)
    opt = build_lm_optimizer(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator(device=device).manual_seed(tc.seed)  # the initial-state noise s0 of every forward
    run_dir.mkdir(parents=True, exist_ok=True)
    resumable = Resumable(optimizer=opt, data=batches, generator=gen)
    step, elapsed, _ = resumable.restore(point, model) if point is not None else (0, 0.0, 0)

    log = RunLog(run_dir, cfg, step=step)
    n_params = sum(p.numel() for p in params)

    def save(step: int, metrics: dict, elapsed: float) -> Path:
        meta = {"kind": "lm", "params": n_params, "metrics": metrics}
        return checkpoint.save(run_dir, step, _unshared(model.state_dict()), None, resumable.state(step, elapsed), cfg,
                               meta,
                               keep=tc.keep_checkpoints)

    model.train()
    meter = Meter()
    with Loop(tc, log, save, run_dir, step, elapsed, until, progress) as loop:
        for step in loop:
            r_bar = mean_recurrence_at(step - 1, lc.mean_recurrence, tc.steps, lc.curriculum_fraction, lc.curriculum)
            depth = sample_depth(r_bar, lc.backprop_depth, step, lc.depth_seed)
            scale = lr_at(step, 1.0, tc.lr_warmup_steps, tc.decay_steps, tc.lr_min_ratio, tc.lr_counter, tc.lr_decay)
            for o, base_lr in zip(opt.optimizers, (lc.muon_lr, lc.adam_lr), strict=True):
                for group in o.param_groups:
                    group["lr"] = base_lr * scale

            loss_sum = 0.0
            for _ in range(lc.grad_accum):
                ids, labels = batches.next(step)
                ids, labels = ids.to(device), labels.to(device)
                with runtime.autocast(tc.dtype, device):
                    out = model(ids, num_steps=depth.total, num_grad_steps=depth.k, generator=gen)
                loss, _ = lm_loss(out.logits, labels)
                check_finite(loss, step, "try lower lm.muon_lr / lm.adam_lr or train.dtype=float32")
                (loss / lc.grad_accum).backward()
                loss_sum += loss.item() / lc.grad_accum
                meter.rate("tokens_per_s", ids.numel())
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)

            meter.add("loss", loss_sum)
            meter.add("n", depth.n)
            meter.add("k", depth.k)
            if loop.log_due:
                m = meter.flush()
                loop.log({"phase": batches.phase(step), "loss": m["loss"], "r_bar": r_bar, "n": m["n"], "k": m["k"],
                          "lr_scale": scale, "tokens_per_s": m["tokens_per_s"]},
                         "{phase} loss {loss:.3f} r_bar {r_bar} n+k {n:.1f}+{k:.1f} {tokens_per_s:.0f} tok/s")
    return loop.result
