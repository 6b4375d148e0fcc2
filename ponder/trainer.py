"""The puzzle trainer: a plain function, in a fixed order per step:
refill halted slots -> lr -> one supervision step (forward) -> loss -> backward -> clip -> step -> EMA -> log -> eval/ckpt.

Each optimiser step is ONE supervision step of every slot of the persistent ACT carry (`ponder.act`), as in
the official TRM/HRM code. The run directory, logs, resume point and the loop skeleton (stop, budget, progress,
checkpoint cadence, Ctrl-C) are the run layer's (`ponder.run`), shared with the LM trainer. Everything a resumed run
needs is in the checkpoint: on CPU, N steps straight and N/2 + `--resume` + N/2 give bit-identical weights
(tests/test_train.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ponder import IGNORE, UserError, checkpoint, distributed, runtime
from ponder.act import Carry, act_loss, act_step, continue_target, empty_carry, refill
from ponder.config import Config
from ponder.evaluate import evaluate_during_training
from ponder.models import build_model, count_params
from ponder.optim import EMA, SignSGD, build_optimizer, set_lr
from ponder.run import (Loop, Meter, Resumable, Run, RunLog, check_finite, own_run, resume_point, resumed_precision,
                        run_meta, warm_start)
from ponder.tasks import prepare_data, task_for
from ponder.tasks.batches import Sampler, batch_tensors
from ponder.tasks.dataset import read_split


def preflight(cfg: Config, new_run: bool = True) -> torch.device:
    """What can be checked before a run directory is named or written: the device, the compile backend and, for a
    `new_run` (not a resume), a given dataset path and the train.init run or checkpoint (the trainer calls it before
    printing the run directory)."""
    device = runtime.resolve_device(cfg.train.device)
    runtime.check_compile_backend(cfg.train.compile)
    if cfg.train.compile != "off":  # auto's probe runs once per process: the trainer reuses its answer
        refusal = runtime.compile_refusal(cfg.train.compile, runtime.resolve_dtype(cfg.train.dtype, device)[0], device)
        if refusal:
            raise UserError(refusal)
    if new_run and cfg.data.path:
        prepare_data(cfg.data, Path("."))  # checks that the folder holds a dataset; builds nothing
    if new_run and cfg.train.init:  # a new run's warm start: found now, not after minutes of building data
        try:
            checkpoint.find(cfg.train.init)
        except UserError as err:
            raise UserError(f"train.init: {err}") from None
    return device


def train(cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True,
          until: int | None = None) -> Run:
    """Train (or resume) the run in `run_dir`, owning it for the time (`own_run`: a second process is refused).
    `until` stops this call at that step (checkpointed), as Ctrl-C would. train.regime=grpo trains by reinforcement
    from the answer's reward instead (`ponder.grpo`, same run layer)."""
    world = distributed.init(cfg.train.device)  # torchrun: join the group (ponder.distributed); else one process
    device = preflight(cfg, new_run=not resume)  # bad device, backend, data or init path: fail before any write
    if cfg.train.batch_size % world.size:
        raise UserError(f"train.batch_size={cfg.train.batch_size} (the global batch) must be divisible by the number "
                        f"of processes ({world.size})")
    if progress and world.main:
        print(f"run directory: {run_dir}" + (f" ({world.size} processes)" if world.parallel else ""))
    with own_run(Path(run_dir), world.main, fresh=None if resume else cfg):
        if cfg.train.regime == "grpo":
            from ponder.grpo import train_grpo

            return train_grpo(cfg, run_dir, resume, progress, until)
        return _train(cfg, Path(run_dir), resume, progress, until, world, device)


def built_data(cfg: Config, run_dir: Path, world: distributed.World) -> Path:
    """An empty data.path: the dataset built into the run directory (rank 0 builds, the others wait, then find it)."""
    data_dir = prepare_data(cfg.data, run_dir) if world.main else None
    distributed.barrier()
    return data_dir or prepare_data(cfg.data, run_dir)


def _train(cfg: Config, run_dir: Path, resume: bool, progress: bool, until: int | None, world: distributed.World,
           device: torch.device) -> Run:
    tc, mc = cfg.train, cfg.model
    point = resume_point(run_dir, cfg, keep=("model", "train.batch_size")) if resume else None
    data_dir = prepare_data(cfg.data, run_dir) if cfg.data.path else None
    if world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    runtime.set_threads(tc.threads, device)
    cfg = runtime.settle_dtype(resumed_precision(cfg, point), device)  # auto -> float32 or bfloat16, recorded
    tc = cfg.train
    torch.manual_seed(tc.seed)

    data_dir = data_dir or built_data(cfg, run_dir, world)
    arrays, meta = read_split(data_dir, "train")
    task = task_for(cfg.data, meta, data_dir)
    model = build_model(mc, meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers).to(device)
    started = warm_start(model, tc.init, point, world.main) if tc.init else {}
    params = list(model.parameters())
    step_model = runtime.data_parallel(model, device) if world.parallel else model  # what the step calls
    if tc.compile != "off":  # the step's forward and backward graphs, compiled (after DDP wraps the model)
        step_model = runtime.compile_model(step_model, tc.compile)
    opt = build_optimizer(model, tc)
    emb_opt = SignSGD(model.puzzle_emb, tc.puzzle_emb_lr, tc.puzzle_emb_weight_decay) if model.puzzle_emb else None
    ema = EMA(params, tc.ema_rate) if tc.ema else None
    sampler = Sampler(arrays, tc.seed)
    gen = torch.Generator(device=device).manual_seed(tc.seed)  # halting exploration draws (global batch, then sliced)
    aug_rng = np.random.default_rng([tc.seed, 1])  # on-the-fly augmentation
    local_batch = tc.batch_size // world.size
    mine = world.shard(tc.batch_size)  # this rank's slots of the global carry
    carry = empty_carry(model, local_batch, meta.seq_len, device)
    resumable = Resumable(torch_rng=True, optimizer=opt, ema=ema, sampler=sampler, generator=gen, aug_rng=aug_rng)
    step, elapsed, seen = 0, 0.0, 0  # seen: training examples drawn (a slot takes a new one when it halts)
    if point is not None:
        def restore_carry(st: dict) -> None:  # the global carry saved; this rank takes its slots
            nonlocal carry
            carry = Carry.from_tensors({k: v[mine].to(device) for k, v in st["carry"].items()}, type(carry.state))

        step, elapsed, seen = resumable.restore(point, model, restore_carry)

    log = RunLog(run_dir, cfg, main=world.main, step=step)
    meta_out = run_meta(meta, count_params(model), data_dir, world.size, **started)

    def save(step: int, metrics: dict, elapsed: float) -> Path:
        """Every rank calls this (the carry is gathered into the global one); rank 0 writes."""
        global_carry = {k: distributed.gather_rows(v).cpu() for k, v in carry.tensors().items()}
        path = checkpoint.step_path(run_dir, step)
        if world.main:
            state = resumable.state(step, elapsed, seen, carry=global_carry)
            path = checkpoint.save(run_dir, step, model.state_dict(), ema_weights(model, ema), state, cfg,
                                   {**meta_out, "metrics": {**metrics, "examples_seen": seen}},
                                   keep=tc.keep_checkpoints)
        distributed.barrier()  # nobody reads a checkpoint before it is complete
        return path

    model.train()
    meter = Meter()
    with Loop(tc, log, save, run_dir, step, elapsed, until, progress and world.main) as loop:
        for step in loop:
            lr = set_lr(step, tc, opt, emb_opt)

            halted = distributed.gather_rows(carry.halted)  # the global carry's free slots
            k = int(halted.sum())
            seen += k
            if k:  # draw for the global batch (same stream as one process), keep the rows of this rank's slots
                rows = batch_tensors(arrays, sampler.take(k), meta.ignore_label_id, device,
                                     task if tc.augment else None, aug_rng)
                carry = refill(model, carry, *(t[own_rows(halted, mine)] for t in rows))
            out, carry, loss = supervision_step(step_model, model, carry, cfg, device, gen, (world.rank, world.size))
            check_finite(loss.total, step, "try a lower train.lr or train.dtype=float32")
            update(loss, local_batch, params, tc, opt, emb_opt, ema)

            add_step_metrics(meter, loss, carry, local_batch)
            if loop.log_due:
                loop.log({"lr": lr, **meter.flush(), "examples_seen": seen},
                         "loss {loss:.3f} exact {exact:.3f} steps {halt_steps:.1f} {examples_per_s:.0f} ex/s")
            if loop.due(tc.eval_every):
                loop.log_eval({**evaluate_during_training(cfg, model, ema, data_dir, device), "examples_seen": seen},
                              "step {step}: eval exact {eval_exact:.3f} (adaptive {eval_adaptive_exact:.3f} at "
                              "{eval_adaptive_steps:.1f} steps)")
    return loop.result


def own_rows(halted: torch.Tensor, mine: slice) -> slice:
    """The rows of a global draw (one per free slot of the global carry, in slot order) that belong to the free
    slots of `mine`, this rank's slice of the slots."""
    first = int(halted[:mine.start].sum())
    return slice(first, first + int(halted[mine].sum()))


def supervision_step(step_model, model, carry: Carry, cfg: Config, device, gen, shard=(0, 1)):
    """Forward and loss of one supervision step of every slot (also what `ponder bench` times).
    step_model: the module called (the model, or its DDP / compiled wrapper); model: the plain module."""
    mc, tc = cfg.model, cfg.train
    with runtime.autocast(tc.dtype, device):
        out, carry = act_step(step_model, carry, mc.n_supervision, mc.halt_exploration_prob, mc.halt_min_steps, gen,
                              shard=shard)
        target = continue_target(model, carry, mc.n_supervision) if mc.act_continue else None  # HRM
        loss = act_loss(out, carry.labels, tc.loss, tc.halt_loss_weight, target)
    return out, carry, loss


def update(loss, local_batch: int, params: list, tc, opt, emb_opt, ema) -> None:
    """Backward, clip, optimiser steps (dense and sparse puzzle table), EMA."""
    # sum over this rank's slots / local batch; DDP averages over ranks -> sum over the global batch / B
    (loss.total / local_batch).backward()
    if tc.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
    opt.step()
    if emb_opt is not None:
        emb_opt.step()
    opt.zero_grad(set_to_none=True)
    if ema is not None:
        ema.update()


def add_step_metrics(meter: Meter, loss, carry: Carry, batch: int) -> None:
    """One step's training metrics: the losses (per-rank means, averaged over steps and ranks) and, over the slots
    that halted (as the official loop reports them), exact and cell accuracy and the supervision steps they used."""
    h = carry.halted
    meter.add("loss", loss.total.item() / batch)
    meter.add("lm_loss", loss.lm.item() / batch)
    meter.add("halt_loss", loss.halt.item() / batch)
    mask = carry.labels != IGNORE
    cell = (loss.correct.sum(-1) / mask.sum(-1).clamp_min(1))[h]
    halted = int(h.sum())
    meter.add("exact", float(loss.seq_correct[h].sum()), halted)
    meter.add("cell", float(cell.sum()), halted)
    meter.add("halt_steps", float(carry.steps[h].sum()), halted)
    meter.rate("examples_per_s", batch)
    if loss.hops is not None:  # per-token ACT of the 1dCA sequence models
        meter.add("act_hops", float(loss.hops.mean()))


def ema_weights(model: torch.nn.Module, ema: EMA | None) -> dict | None:
    """The model's state dict with the EMA weights in place of the raw ones (buffers as they are)."""
    if ema is None:
        return None
    names = [n for n, _ in model.named_parameters()]
    return {**model.state_dict(), **dict(zip(names, ema.shadow))}
