"""The training loop: a plain function, in a fixed order per step:
refill halted slots -> lr -> one supervision step (forward) -> loss -> backward -> clip -> step -> EMA -> log -> eval/ckpt.

Each optimiser step is ONE supervision step of every slot of the persistent ACT carry (`ponder.act`), as in
the official TRM/HRM code. Everything a resumed run needs is in the checkpoint: on CPU, N steps straight and
N/2 + `--resume` + N/2 give bit-identical weights (tests/test_train.py).
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ponder import UserError, checkpoint, distributed, runtime
from ponder.act import Carry, act_loss, act_step, continue_target, empty_carry, refill
from ponder.config import Config, dump_yaml
from ponder.files import atomic_write_text
from ponder.models import build_model, count_params
from ponder.optim import EMA, SignSGD, build_optimizer, lr_at
from ponder.tasks import prepare_data, task_for
from ponder.tasks.dataset import IGNORE, Sampler, batch_tensors, read_split


class TrainingDiverged(Exception):
    """The loss became NaN/inf; the run stops and the last good checkpoint is kept."""


@dataclass
class Run:
    """What a finished `train` call hands back."""

    run_dir: Path
    checkpoint: Path
    step: int
    seconds: float
    metrics: dict


def train(cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True, until: int | None = None) -> Run:
    """Train (or resume) the run in `run_dir`. `until` stops this call at that step (checkpointed), as Ctrl-C would."""
    run_dir = Path(run_dir)
    tc, mc = cfg.train, cfg.model
    world = distributed.init(tc.device)  # torchrun: join the group (ponder.distributed); else one process
    if tc.batch_size % world.size:
        raise UserError(f"train.batch_size={tc.batch_size} (the global batch) must be divisible by the number of "
                        f"processes ({world.size})")
    device = runtime.resolve_device(tc.device)  # bad device, backend or data path: fail before anything is written
    runtime.check_compile_backend(tc.compile)
    data_dir = prepare_data(cfg.data, run_dir) if cfg.data.path else None
    if world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    runtime.set_threads(tc.threads, device)
    torch.manual_seed(tc.seed)

    if not data_dir:  # an empty data.path builds into the run directory (rank 0 builds, the others wait)
        if world.main:
            data_dir = prepare_data(cfg.data, run_dir)
        distributed.barrier()
        data_dir = data_dir or prepare_data(cfg.data, run_dir)
    arrays, meta = read_split(data_dir, "train")
    task = task_for(cfg.data, meta, data_dir)
    model = build_model(mc, meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers).to(device)
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
    step, elapsed_before = 0, 0.0

    if resume:
        ckpt = checkpoint.latest_for_resume(run_dir)
        saved = checkpoint.load_config(ckpt)
        if saved.model != cfg.model or saved.train.batch_size != tc.batch_size:
            raise UserError(f"{ckpt}: a resumed run keeps its model config and train.batch_size; start a new run "
                            f"to change them")
        model.load_state_dict(checkpoint.load_weights(ckpt, ema=False))
        st = checkpoint.load_state(ckpt)
        opt.load_state_dict(st["optimizer"])
        if ema is not None:
            ema.shadow = [t.to(device) for t in st["ema"]]
        sampler.load_state_dict(st["sampler"])
        gen.set_state(st["generator"])
        aug_rng.bit_generator.state = st["aug_rng"]
        carry = Carry.from_tensors({k: v[mine].to(device) for k, v in st["carry"].items()}, type(carry.state))
        step, elapsed_before = st["step"], st["elapsed"]

    if world.main:
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    n_params = count_params(model)
    meta_out = {"vocab_size": meta.vocab_size, "seq_len": meta.seq_len,
                "num_puzzle_identifiers": meta.num_puzzle_identifiers, "params": n_params,
                "data": str(data_dir.resolve()), "processes": world.size}
    log_file = open(run_dir / "metrics.jsonl", "a") if world.main else _NullLog()
    tb = _tensorboard(run_dir) if world.main else None

    def ema_state() -> dict | None:
        if ema is None:
            return None
        sd = model.state_dict()
        names = [n for n, _ in model.named_parameters()]
        return {**sd, **dict(zip(names, ema.shadow))}

    def save(metrics: dict) -> Path:
        """Every rank calls this (the carry is gathered into the global one); rank 0 writes."""
        global_carry = {k: distributed.gather_rows(v).cpu() for k, v in carry.tensors().items()}
        path = checkpoint.step_path(run_dir, step)
        if world.main:
            state = {"optimizer": opt.state_dict(), "ema": [t.cpu() for t in ema.shadow] if ema else None,
                     "sampler": sampler.state_dict(), "generator": gen.get_state(),
                     "aug_rng": aug_rng.bit_generator.state, "carry": global_carry, "step": step,
                     "elapsed": elapsed_before + time.perf_counter() - t0}
            path = checkpoint.save(run_dir, step, model.state_dict(), ema_state(), state, cfg,
                                   {**meta_out, "metrics": metrics}, keep=tc.keep_checkpoints)
        distributed.barrier()  # nobody reads a checkpoint before it is complete
        return path

    model.train()
    t0 = time.perf_counter()
    budget = tc.max_minutes * 60
    bar = progress_bar(tc, step, progress and world.main)
    acc = _Meter()
    last = {}
    ckpt_path = None
    with _StopOnSigint() as stop:
        while step < min(tc.steps, until or tc.steps):
            if distributed.any_rank(must_stop(stop, bar, step, budget, elapsed_before + time.perf_counter() - t0)):
                break
            step += 1
            lr = lr_at(step, tc.lr, tc.lr_warmup_steps, tc.steps, tc.lr_min_ratio)
            for group in opt.param_groups:
                group["lr"] = lr
            if emb_opt is not None:
                emb_opt.lr = lr_at(step, tc.puzzle_emb_lr, tc.lr_warmup_steps, tc.steps, tc.lr_min_ratio)

            halted = distributed.gather_rows(carry.halted)  # the global carry's free slots
            k = int(halted.sum())
            if k:  # draw for the global batch (same stream as one process), keep the rows of this rank's slots
                rows = batch_tensors(arrays, sampler.take(k), meta.ignore_label_id, device,
                                     task if tc.augment else None, aug_rng)
                carry = refill(model, carry, *(t[own_rows(halted, mine)] for t in rows))
            out, carry, loss = supervision_step(step_model, model, carry, cfg, device, gen, (world.rank, world.size))
            if distributed.any_rank(not torch.isfinite(loss.total).item()):
                raise TrainingDiverged(f"loss is {loss.total.item()} at step {step} (rank {world.rank}); stopped, the "
                                       f"last good checkpoint is kept (try a lower train.lr or train.dtype=float32)")
            update(loss, local_batch, params, tc, opt, emb_opt, ema)

            acc.add(loss, carry, local_batch)
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.steps:
                last = {"step": step, "lr": lr, **acc.flush(), "elapsed": elapsed_before + time.perf_counter() - t0}
                write_log(last, log_file, tb)
                bar.set_postfix_str(f"loss {last['loss']:.3f} exact {last['exact']:.3f} steps {last['halt_steps']:.1f} "
                                    f"{last['examples_per_s']:.0f} ex/s")
            if tc.eval_every and step % tc.eval_every == 0:
                last.update(_eval_during_training(cfg, model, ema, data_dir, device, step, log_file, tb))
            if tc.checkpoint_every and step % tc.checkpoint_every == 0:
                ckpt_path = save(last)
    return finish_run(run_dir, step, ckpt_path, save, last, bar, log_file, tb, stop,
                      elapsed_before + time.perf_counter() - t0)


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


def progress_bar(tc, step: int, progress: bool) -> tqdm:
    return tqdm(total=tc.steps, initial=step, disable=not progress, dynamic_ncols=True, leave=True, mininterval=1.0,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")


def must_stop(stop, bar, step: int, budget_s: float, elapsed_s: float) -> bool:
    """Ctrl-C (finish at a step boundary so the checkpoint is consistent) or the wall-time budget is spent."""
    if stop.requested:
        bar.write(f"interrupted at step {step}: saving a checkpoint")
        return True
    return bool(budget_s) and elapsed_s >= budget_s


def write_log(last: dict, log_file, tb) -> None:
    """One metrics.jsonl line and its numeric values to TensorBoard (train/<key>)."""
    log_file.write(json.dumps(last) + "\n")
    log_file.flush()
    if tb is not None:
        for key, v in last.items():
            if key != "step" and isinstance(v, (int, float)):
                tb.add_scalar(f"train/{key}", v, last["step"])


def finish_run(run_dir: Path, step: int, ckpt_path: Path | None, save, last: dict, bar, log_file, tb, stop,
               seconds: float) -> Run:
    """End of a training call (shared by the puzzle and LM trainers): the final checkpoint unless this step was just
    saved, close the logs, re-raise a Ctrl-C once the checkpoint is on disk."""
    bar.close()
    if ckpt_path is None or not ckpt_path.name.endswith(f"{step:08d}"):
        ckpt_path = save(last)
    log_file.close()
    if tb is not None:
        tb.close()
    if stop.requested:
        raise KeyboardInterrupt
    return Run(run_dir, ckpt_path, step, seconds, last)


class _NullLog:
    """metrics.jsonl on ranks other than 0: nothing is written."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _StopOnSigint:
    """The first Ctrl-C asks the loop to stop at the next step boundary (then a checkpoint is saved);
    a second one interrupts at once, leaving the last periodic checkpoint as it was."""

    def __init__(self):
        self.requested = False
        self._old = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: leave the default behaviour
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class _Meter:
    """Training metrics over the slots that halted since the last flush (as the official loop reports them)."""

    def __init__(self):
        self.t = time.perf_counter()
        self.sums = dict(loss=0.0, lm=0.0, halt=0.0, count=0, exact=0.0, cell=0.0, steps=0.0, n=0, examples=0)

    def add(self, loss, carry: Carry, batch: int) -> None:
        s = self.sums
        h = carry.halted
        s["loss"] += loss.total.item() / batch
        s["lm"] += loss.lm.item() / batch
        s["halt"] += loss.halt.item() / batch
        s["n"] += 1
        s["examples"] += batch
        mask = carry.labels != IGNORE
        cell = (loss.correct.sum(-1) / mask.sum(-1).clamp_min(1))[h]
        s["count"] += int(h.sum())
        s["exact"] += float(loss.seq_correct[h].sum())
        s["cell"] += float(cell.sum())
        s["steps"] += float(carry.steps[h].sum())

    def flush(self) -> dict:
        """The metrics since the last flush, summed over every rank (a collective: all ranks flush together)."""
        s, dt = self.sums, time.perf_counter() - self.t
        keys = list(s)
        s = dict(zip(keys, distributed.sum_floats([float(s[k]) for k in keys])))
        s["n"] = self.sums["n"]  # losses are per-rank means: average them over ranks
        for k in ("loss", "lm", "halt"):
            s[k] /= distributed.world().size
        c, n = max(1, s["count"]), max(1, s["n"])
        out = {"loss": s["loss"] / n, "lm_loss": s["lm"] / n, "halt_loss": s["halt"] / n, "exact": s["exact"] / c,
               "cell": s["cell"] / c, "halt_steps": s["steps"] / c, "examples_per_s": s["examples"] / dt}
        self.__init__()
        return out


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a missing optional logger must not stop training
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _eval_during_training(cfg, model, ema, data_dir, device, step, log_file, tb) -> dict:
    from ponder.evaluate import evaluate_model

    arrays, meta = read_split(data_dir, "test")
    backup = None
    if ema is not None:  # evaluate the EMA weights, as the official code does
        backup = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            for p, s in zip(model.parameters(), ema.shadow):
                p.copy_(s)
    res = evaluate_model(cfg, model, arrays, meta, device, max_steps=cfg.model.n_supervision)
    if backup is not None:
        with torch.no_grad():
            for p, b in zip(model.parameters(), backup):
                p.copy_(b)
    model.train()
    out = {"eval_exact": res["exact"][-1], "eval_cell": res["cell"][-1],
           "eval_adaptive_exact": res["adaptive"]["exact"], "eval_adaptive_steps": res["adaptive"]["mean_steps"]}
    log_file.write(json.dumps({"step": step, **out}) + "\n")
    if tb is not None:
        for k, v in out.items():
            tb.add_scalar(k.replace("eval_", "eval/"), v, step)
    if distributed.world().main:
        tqdm.write(f"step {step}: eval exact {out['eval_exact']:.3f} (adaptive {out['eval_adaptive_exact']:.3f} "
                   f"at {out['eval_adaptive_steps']:.1f} steps)")
    return out
