"""The run layer both trainers stand on (`ponder.trainer` for puzzles, `ponder.lm.train` for LMs): the run directory,
its logs, its resume point, and the loop skeleton.

    <run>/config.yaml     the resolved config (rewritten atomically at every start and resume)
    <run>/metrics.jsonl   one JSON line per log interval (and per periodic evaluation)
    <run>/tb/             TensorBoard: the same numbers, as train/<key> and eval/<key>
    <run>/machine.jsonl   one line per start and resume: when, from which step, on what machine (`machine()`)
    <run>/.lock           held by the one process training the run (`RunLock`, `own_run`)
    <run>/.ponder         the run's identity: kind, a random id every checkpoint records (`checkpoint.run_id`)
    <run>/ckpt/           complete checkpoints (`ponder.checkpoint`)

`Loop` is the skeleton written once; each trainer writes its own step inside it, in the open:

    with Loop(cfg.train, log, save, run_dir, step, elapsed, until, progress) as loop:
        for step in loop:          # stops at train.steps, `until`, the wall-time budget, or a Ctrl-C
            ...one optimiser step...
            if loop.log_due:
                loop.log({...}, "loss {loss:.3f}")   # metrics.jsonl, TensorBoard, the progress bar
    run = loop.result              # the final checkpoint is written when the block ends

A checkpoint is saved every train.checkpoint_every steps and at the end (unless that step was just saved); a
first Ctrl-C finishes the current step, saves, and re-raises KeyboardInterrupt once the checkpoint is on disk.
Under torchrun every rank runs the loop (its stop decision is agreed by all ranks); rank 0 alone writes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ponder import UserError, checkpoint, distributed
from ponder.config import Config, TrainConfig, apply_overrides, changed_keys, dump_yaml, from_dict, to_dict
from ponder.files import LOCK, MARKER, atomic_write_text, open_no_follow, read_marker, refuse_link, take_lock


class TrainingDiverged(Exception):
    """The loss became NaN/inf; the run stops, its checkpoints untouched (the message names the newest, if any)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; the message says which checkpoint holds the run (or that none was saved)."""


def check_finite(loss: torch.Tensor, step: int, hint: str) -> None:
    """The NaN guard: raise TrainingDiverged on every rank when the loss of any rank is not finite."""
    if distributed.any_rank(not torch.isfinite(loss).item()):
        world = distributed.world()
        where = f" (rank {world.rank})" if world.parallel else ""
        raise TrainingDiverged(f"loss is {loss.item()} at step {step}{where}; stopped ({hint})")


# ---------------------------------------------------------------------------------------------------------------------
# configs of existing runs


def config_from_checkpoint(path: str | Path, overrides: list[str] = ()) -> tuple[Path, Config]:
    """(checkpoint directory, its config with `overrides` applied) of a checkpoint or run directory (the latest)."""
    ckpt = checkpoint.find(path)
    return ckpt, from_dict(Config, apply_overrides(to_dict(checkpoint.load_config(ckpt)), list(overrides)))


def default_run_dir(preset: str, out: str | Path | None = None) -> Path:
    """`out`, or runs/<preset name>-<time> when none is given."""
    return Path(out) if out else Path("runs") / f"{Path(preset).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def fresh_run_dir(path: Path, cfg: Config | None = None) -> Path:
    """A run directory that holds no earlier work: refuse rather than overwrite good data. A run stopped before its
    first checkpoint holds nothing to lose: with `cfg` of the same data settings it is started again (its partial
    logs are cut back; a process still training it is refused by the run's lock). Checked before the run is started
    (to fail early) and again once its lock is held (`own_run`), which is the check that decides."""
    path = Path(path)
    refuse_link(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder; give another --out")
    if not path.exists() or not [p for p in path.iterdir() if p.name not in (LOCK, MARKER)]:
        return path
    if {p.name for p in path.iterdir()} <= {LOCK, MARKER, "data"} and (path / "data" / "test" / "dataset.json").is_file():
        return path  # only the run's dataset, built before training (`ponder demo`)
    if cfg is not None and (path / "config.yaml").is_file() and not checkpoint.list_checkpoints(path):
        if to_dict(checkpoint.load_config(path).data) == to_dict(cfg.data):
            print(f"note: {path} holds a run stopped before its first checkpoint: starting it again", file=sys.stderr)
            return path
        raise UserError(f"{path}: holds a run stopped before its first checkpoint, with other data settings; give "
                        f"another --out, or delete it")
    if not (path / "config.yaml").is_file() and read_marker(path) is None:
        raise UserError(f"{path}: a folder ponder did not make, and not empty; give a new or empty --out")
    raise UserError(f"{path}: already holds a run; pass --resume {path} to continue it, or another --out")


def choose_run_dir(path: Path, cfg: Config) -> Path:
    """`fresh_run_dir` decided once: under torchrun rank 0 checks it (a default name holds rank 0's time stamp) and
    tells the others; a refusal is raised on every rank."""
    distributed.init(cfg.train.device)
    choice: object = None
    if distributed.world().main:
        try:
            choice = str(fresh_run_dir(path, cfg))
        except UserError as e:
            choice = e
    choice = distributed.broadcast(choice)
    if isinstance(choice, UserError):
        raise choice
    return Path(choice)


def resumed_config(run: str | Path, overrides: list[str] = ()) -> tuple[Config, Path, bool]:
    """(config, run directory, from a checkpoint) of a run to resume: its config + key=value overrides. A run
    stopped before its first checkpoint resumes from step 0 with its config.yaml."""
    run = Path(run)
    if run.is_dir() and (run / "config.yaml").is_file() and not checkpoint.list_checkpoints(run):
        cfg = from_dict(Config, apply_overrides(to_dict(checkpoint.load_config(run)), list(overrides)))
        if checkpoint.moved_aside(run):  # a killed re-save: training puts the checkpoint back once it owns the run
            return cfg, run, True
        print(f"note: {run} holds no checkpoint (stopped before its first save): training it from step 0",
              file=sys.stderr)
        return cfg, run, False
    return config_from_checkpoint(run, overrides)[1], run, True


@dataclass
class ResumePoint:
    checkpoint: Path
    weights: dict  # raw (not EMA) weights and buffers
    state: dict  # what the trainer saved in state.pt: optimiser, RNGs, data position, step, elapsed


def resume_point(run_dir: Path, cfg: Config, keep: tuple[str, ...]) -> ResumePoint:
    """The latest checkpoint of a run being resumed, after checking that `cfg` keeps the config keys `keep` (the
    ones that define the weights and the data stream, e.g. "model" and "train.batch_size")."""
    ckpt = checkpoint.latest_for_resume(run_dir)
    if not (ckpt / "state.pt").exists():
        raise UserError(f"{ckpt}: holds weights only (an imported checkpoint), no training state to resume")
    if (Path(run_dir) / "config.yaml").is_file():  # a checkpoint folder of another run copied in is not adopted
        own = checkpoint.load_config(Path(run_dir))
        foreign = changed_keys(own, checkpoint.load_config(ckpt), (*keep, "data.task"))
        if foreign:
            raise UserError(f"{ckpt}: its config differs from the run's config.yaml in {', '.join(foreign[:3])}: a "
                            f"checkpoint of another run? Not resuming from it (move it out of {run_dir}/ckpt)")
    changed = changed_keys(checkpoint.load_config(ckpt), cfg, keep)
    if changed:
        raise UserError(f"{ckpt}: a resumed run keeps its model config and batch size ({', '.join(keep)}); "
                        f"{', '.join(changed)} changed: start a new run to change them")
    return ResumePoint(ckpt, checkpoint.load_weights(ckpt, ema=False), checkpoint.load_state(ckpt))


def run_meta(meta, params: int, data_dir: Path, processes: int, **extra) -> dict:
    """A puzzle run's meta.json: the dataset sizes its model is built with (`meta`: the split's Metadata), the
    weight count, where its data lives, how many processes trained it, and `extra` (e.g. warm-start provenance)."""
    return {"vocab_size": meta.vocab_size, "seq_len": meta.seq_len, "num_puzzle_identifiers": meta.num_puzzle_identifiers,
            "params": params, "data": str(Path(data_dir).resolve()), "processes": processes, **extra}


class Resumable:
    """The one save-and-restore of a trainer's state.pt: each part named once and saved and restored the same way
    (an object with state_dict/load_state_dict - optimiser, sampler, data stream, EMA, a reference model -, a
    torch.Generator, a NumPy Generator, or None), with the counters every trainer keeps (step, elapsed seconds,
    examples drawn) and, where asked, torch's global random stream."""

    def __init__(self, torch_rng: bool = False, **parts):
        self.parts, self.torch_rng = parts, torch_rng

    def state(self, step: int, elapsed: float, seen: int | None = None, **extra) -> dict:
        """What state.pt holds at `step`: every part's state, the counters, and `extra` (e.g. a gathered carry)."""
        out = {name: _part_state(part) for name, part in self.parts.items()}
        out.update(step=step, elapsed=elapsed, **({"examples_seen": seen} if seen is not None else {}))
        if self.torch_rng:
            out["torch_rng"] = torch.get_rng_state()
        return {**out, **extra}

    def restore(self, point: ResumePoint, model: torch.nn.Module,
                extra: Callable[[dict], None] | None = None) -> tuple[int, float, int]:
        """Fill `model` and every part from a resume point, then `extra(state)` (a trainer's own entries); returns
        (step, elapsed, examples drawn). A state.pt that does not fit is one line naming it (`restoring`)."""
        checkpoint.load_into(model, point.weights, point.checkpoint)
        with restoring(point.checkpoint):
            st = point.state
            for name, part in self.parts.items():
                _load_part(part, st[name])
            if self.torch_rng and "torch_rng" in st:  # older checkpoints lack it
                torch.set_rng_state(st["torch_rng"])
            if extra is not None:
                extra(st)
            return st["step"], st["elapsed"], st.get("examples_seen", 0)  # older checkpoints lack examples_seen


def _part_state(part):
    import numpy as np

    if part is None:
        return None
    if isinstance(part, torch.Generator):
        return part.get_state()
    if isinstance(part, np.random.Generator):
        return part.bit_generator.state
    return part.state_dict()


def _load_part(part, state) -> None:
    import numpy as np

    if part is None:
        return
    if isinstance(part, torch.Generator):
        part.set_state(state)
    elif isinstance(part, np.random.Generator):
        part.bit_generator.state = state
    else:
        part.load_state_dict(state)


def resumed_precision(cfg: Config, point: ResumePoint | None) -> Config:
    """A resumed run keeps the precision it started in: train.dtype=auto takes the value auto picked then, recorded
    in the checkpoint's config (another machine might pick otherwise, and the resume would not be exact)."""
    if point is None or cfg.train.dtype != "auto":
        return cfg
    import dataclasses  # (ponder.runtime.with_dtype sits beside the run layer, not below it)

    recorded = checkpoint.load_config(point.checkpoint).train.dtype
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, dtype=recorded))


def warm_start(model, init: str, resumed: "ResumePoint | None" = None, main: bool = True) -> dict:
    """train.init: the weights a new run starts from (`checkpoint.warm_start`), said on stderr. A resumed run loads
    its own checkpoint instead and keeps what its meta recorded. Returns what the run's meta records: the checkpoint
    started from and the examples drawn there (a study counts them in the member's curve)."""
    if resumed is not None:
        meta = checkpoint.load_meta(resumed.checkpoint)
        return {k: meta[k] for k in ("init", "init_examples") if k in meta}
    info = checkpoint.warm_start(model, init)
    if main:
        fresh = f"; fresh: {len(info['fresh'])} tensors ({info['fresh'][0]}, ...)" if info["fresh"] else ""
        print(f"train.init: weights from {info['init']} ({info['init_examples']:,} examples drawn there){fresh}",
              file=sys.stderr)
    return {"init": info["init"], "init_examples": info["init_examples"]}


@contextmanager
def restoring(ckpt: Path) -> Iterator[None]:
    """Around a trainer's restore of its state.pt: a state that does not fit the run (a missing key, another
    optimiser's parameter groups, tensors of other shapes) is a UserError naming the checkpoint, not a traceback."""
    try:
        yield
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError) as e:
        text = str(e).splitlines()[0][:160] if str(e) else ""
        raise UserError(f"{ckpt}/state.pt: does not fit this run ({e.__class__.__name__}: {text})") from None


# ---------------------------------------------------------------------------------------------------------------------
# ownership

class RunLock:
    """One process owns a run directory while it trains it: an exclusive `flock` on RUN/.lock, taken before anything
    is written and held until training ends. The OS drops the lock when its process dies, however it dies, so a run
    left by a killed process never stays blocked; the file names its owner (pid, host, start), and a clean end clears
    the name, so a name found on taking the lock tells that the previous owner was killed. Under torchrun rank 0 owns
    the run (the other ranks write nothing). Where `fcntl` is missing (Windows) runs are not locked."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.file = None
        self.made = False

    def acquire(self) -> str:
        """Take the run, or UserError naming its owner; returns the owner a killed process left named ("" if none)."""
        refuse_link(self.run_dir)
        self.made = not self.run_dir.exists()
        f = take_lock(self.run_dir, "run")
        if f is None:
            return ""
        f.seek(0)
        previous = f.read().strip()
        f.seek(0)
        f.truncate()
        import platform

        f.write(f"process {os.getpid()} on {platform.node()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self.file = f
        return previous

    def release(self) -> None:
        """Clear the owner's name and let go; a directory this lock made and nothing else wrote into goes too (a
        start that failed before writing leaves nothing behind)."""
        if self.file is None:
            return
        self.file.seek(0)
        self.file.truncate()
        self.file.close()
        self.file = None
        if self.made and {p.name for p in self.run_dir.iterdir()} <= {LOCK, MARKER}:
            for name in (LOCK, MARKER):
                (self.run_dir / name).unlink(missing_ok=True)
            self.run_dir.rmdir()


@contextmanager
def own_run(run_dir: Path, main: bool = True, fresh: Config | None = None) -> Iterator[None]:
    """Hold the run's lock for the block (rank 0), after saying on stderr what a killed predecessor left: its name on
    the lock, and the unfinished checkpoint writes `checkpoint.recover` cleans up. Ownership comes before every
    decision: a new run (`fresh`: its config) is checked to be new once the lock is held (`fresh_run_dir`), so a
    process that trained the folder meanwhile is never trained over; then the run's identity (`checkpoint.run_id`)."""
    lock = RunLock(run_dir) if main else None
    if lock is not None:
        previous = lock.acquire()
        try:
            if fresh is not None:
                fresh_run_dir(run_dir, fresh)
            checkpoint.run_id(run_dir)
        except BaseException:
            lock.release()
            raise
        if previous:
            print(f"note: {run_dir} was last trained by {previous}, which ended without closing it (killed?)",
                  file=sys.stderr)
        for note in checkpoint.recover(run_dir):
            print(f"note: {note}", file=sys.stderr)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


# ---------------------------------------------------------------------------------------------------------------------
# logs


class NullSink:
    """Stands in for metrics.jsonl and TensorBoard where nothing is written (ranks other than 0, no tensorboard)."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        pass

    def close(self) -> None:
        pass


def tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a missing optional logger must not stop training
        return NullSink()
    refuse_link(run_dir / "tb")
    return SummaryWriter(str(run_dir / "tb"))


def machine(device: str = "cpu") -> dict:
    """What a run ran on, for its report: CPU model and cores, threads, accelerator, torch, Python, ponder."""
    import os
    import platform

    from ponder import __version__

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "device": device, "torch": torch.__version__, "python": platform.python_version(), "ponder": __version__,
            "platform": platform.platform()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _truncate_metrics(path: Path, step: int) -> None:
    """metrics.jsonl as of `step` (the checkpoint a run resumes from, 0 for a fresh start): the lines a killed process
    wrote after its last checkpoint are dropped (they are written again), so every step appears once."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a kill
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))
        print(f"note: {path}: {len(lines) - len(kept)} lines after step {step} dropped (written again from there)",
              file=sys.stderr)


class RunLog:
    """A run's config.yaml, metrics.jsonl, machine.jsonl and TensorBoard, opened by rank 0 (the other ranks get no-op
    sinks)."""

    def __init__(self, run_dir: Path, cfg: Config, main: bool = True, step: int = 0):
        if main:
            atomic_write_text(Path(run_dir) / "config.yaml", dump_yaml(cfg))
            world = distributed.world()
            record = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step, "processes": world.size,
                      **machine(cfg.train.device)}
            with open_no_follow(Path(run_dir) / "machine.jsonl") as f:
                f.write(json.dumps(record) + "\n")
            _truncate_metrics(Path(run_dir) / "metrics.jsonl", step)
        self.file = open_no_follow(Path(run_dir) / "metrics.jsonl") if main else NullSink()
        self.board = tensorboard(Path(run_dir)) if main else NullSink()

    def write(self, record: dict, section: str = "train") -> None:
        """One metrics.jsonl line; its numbers to TensorBoard as <section>/<key> ("eval_exact" -> "eval/exact")."""
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.board.add_scalar(f"{section}/{key.removeprefix(section + '_')}", value, record["step"])

    def close(self) -> None:
        self.file.close()
        self.board.close()


# ---------------------------------------------------------------------------------------------------------------------
# the loop skeleton


class StopOnSigint:
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


def safe_point(run_dir: Path, tc: TrainConfig, found: list[Path]) -> str:
    """For a diverged run: which checkpoint to resume from, when the newest one is no longer sane (its weights had
    already blown up, so resuming from it diverges again at once)."""
    sane = checkpoint.newest_sane(run_dir, tc.sane_weight_ratio)
    if not found or sane is None or sane == found[-1]:
        return ""
    later = [p.name for p in found if p > sane]
    return (f"the newest sane checkpoint is {sane} (the later {', '.join(later)} hold weights more than "
            f"{tc.sane_weight_ratio:g}x the first checkpoint's RMS: train.sane_weight_ratio); move those out of "
            f"{run_dir}/ckpt and resume with a lower learning rate")


@dataclass
class Run:
    """What a finished training call hands back."""

    run_dir: Path
    checkpoint: Path
    step: int
    seconds: float
    metrics: dict


class Loop:
    """The training loop's skeleton, shared by both trainers (see the module docstring). Iterating yields the next
    step number; the periodic checkpoint of a step is written after the trainer's body for it has run."""

    def __init__(self, tc: TrainConfig, log: RunLog, save: Callable[[int, dict, float], Path], run_dir: Path,
                 step: int = 0, elapsed: float = 0.0, until: int | None = None, progress: bool = True):
        self.tc, self.log_sink, self.save, self.run_dir = tc, log, save, Path(run_dir)
        self.step, self.elapsed_before, self.last_step = step, elapsed, min(tc.steps, until or tc.steps)
        self.last: dict = {}  # the latest log record (+ evaluation results): the checkpoint's meta metrics
        self.checkpoint: Path | None = None
        self.result: Run | None = None
        # the bar counts what ends the run: seconds of the wall-time budget when there is one (ETA = the budget left,
        # whichever of steps and minutes comes first), else steps; off a terminal, plain lines at each log instead
        self.budget = tc.max_minutes * 60
        self.tty = sys.stderr.isatty()
        self.progress = progress
        total, initial = (self.budget, min(elapsed, self.budget)) if self.budget else (tc.steps, step)
        fmt = ("{l_bar}{bar}| {elapsed}<{remaining} of " + f"{tc.max_minutes:g} min" + " {postfix}" if self.budget
               else "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")
        self.bar = tqdm(total=total, initial=initial, disable=not (progress and self.tty), dynamic_ncols=True,
                        leave=True, mininterval=1.0, bar_format=fmt)

    def elapsed(self) -> float:
        """Training seconds of the whole run, resumed calls included."""
        return self.elapsed_before + time.perf_counter() - self.t0

    def __enter__(self) -> Loop:
        self.stop = StopOnSigint().__enter__()
        self.t0 = time.perf_counter()
        return self

    def _must_stop(self) -> bool:
        """Ctrl-C (finish at a step boundary so the checkpoint is consistent) or the wall-time budget is spent."""
        if self.stop.requested:
            self.bar.write(f"interrupted at step {self.step}: saving a checkpoint")
            return True
        budget = self.tc.max_minutes * 60
        return bool(budget) and self.elapsed() >= budget

    def __iter__(self) -> Iterator[int]:
        while self.step < self.last_step and not distributed.any_rank(self._must_stop()):
            self.step += 1
            yield self.step  # the trainer's body runs here
            self.bar.update(min(self.elapsed(), self.budget) - self.bar.n if self.budget else 1)
            if self.due(self.tc.checkpoint_every):
                self.checkpoint = self.save(self.step, self.last, self.elapsed())

    def due(self, every: int) -> bool:
        """Whether this step is one of every `every` steps (0 = never)."""
        return bool(every) and self.step % every == 0

    @property
    def log_due(self) -> bool:
        return self.due(self.tc.log_every) or self.step == self.tc.steps

    def log(self, values: dict, text: str = "") -> dict:
        """Write {step, **values, elapsed} to metrics.jsonl and TensorBoard; `text` (a format string over the
        record, e.g. "loss {loss:.3f}") becomes the progress bar's postfix. Returns the record."""
        self.last = {"step": self.step, **values, "elapsed": self.elapsed()}
        self.log_sink.write(self.last)
        if text:
            line = (f"step {self.step}" + ("" if self.budget else f"/{self.last_step}") + ", "
                    + text.format(**self.last))
            self.bar.set_postfix_str(line)
            if self.progress and not self.tty:  # a log file: one plain line per log interval
                minutes = self.elapsed() / 60
                print(f"{minutes:6.1f} min " + (f"of {self.tc.max_minutes:g} " if self.budget else "") + line,
                      file=sys.stderr, flush=True)
        return self.last

    def log_eval(self, values: dict, text: str = "") -> None:
        """A periodic evaluation's results: a metrics.jsonl line, eval/<key> in TensorBoard, a printed line (rank 0);
        they join the metrics of the next checkpoint."""
        self.log_sink.write({"step": self.step, **values}, section="eval")
        self.last.update(values)
        if text and distributed.world().main:
            tqdm.write(text.format(step=self.step, **values))

    def __exit__(self, kind, exc, tb) -> None:
        self.stop.__exit__()
        self.bar.close()
        if kind is not None:  # an error (or a second Ctrl-C) inside the loop: the last periodic checkpoint stays
            self.log_sink.close()
            if issubclass(kind, (KeyboardInterrupt, TrainingDiverged)):  # say which checkpoint that is, if any
                newest = checkpoint.list_checkpoints(self.run_dir)
                where = (f"the newest checkpoint is {newest[-1]} (ponder train --resume {self.run_dir} continues "
                         f"from it)" if newest else "no checkpoint was saved yet")
                if issubclass(kind, KeyboardInterrupt):
                    raise Interrupted(f"interrupted at step {self.step} before a checkpoint; {where}") from None
                raise TrainingDiverged(f"{exc}; {safe_point(self.run_dir, self.tc, newest) or where}") from None
            return
        if self.checkpoint is None or not self.checkpoint.name.endswith(f"{self.step:08d}"):
            self.checkpoint = self.save(self.step, self.last, self.elapsed())
        self.log_sink.close()
        self.result = Run(self.run_dir, self.checkpoint, self.step, self.elapsed(), self.last)
        if self.stop.requested:
            raise Interrupted(f"interrupted: checkpoint {self.checkpoint} saved (ponder train --resume {self.run_dir} "
                              f"continues)")


class Meter:
    """Training metrics between two logs, written once for every trainer. `add(key, value, n)` accumulates a sum and
    its weight (the logged mean is sum / weight, 0 with no weight); `rate(key, amount)` accumulates an amount logged
    per second. `flush()` sums both over ranks (a collective: every rank flushes together), returns the metrics in
    the order they were first added since the last flush, and starts again."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, list[float]] = {}  # key -> [sum, weight]; weight None for a rate
        self.t = time.perf_counter()

    def add(self, key: str, value: float, n: float = 1.0) -> None:
        entry = self.sums.setdefault(key, [0.0, 0.0])
        entry[0] += value
        entry[1] += n

    def rate(self, key: str, amount: float) -> None:
        entry = self.sums.setdefault(key, [0.0, None])
        entry[0] += amount

    def flush(self) -> dict[str, float]:
        dt = time.perf_counter() - self.t
        keys = list(self.sums)
        flat = distributed.sum_floats([float(x) for k in keys for x in self.sums[k] if x is not None])
        out, i = {}, 0
        for k in keys:
            if self.sums[k][1] is None:
                out[k] = flat[i] / dt
                i += 1
            else:
                out[k] = flat[i] / flat[i + 1] if flat[i + 1] else 0.0
                i += 2
        self._reset()
        return out


def read_metrics(run: Path) -> tuple[list[dict], list[dict]]:
    """metrics.jsonl as (training records, periodic-evaluation records), one per step (the last one written wins,
    so steps repeated by a resume count once); a torn last line is skipped, and so is a value that is not a number
    (a damaged or edited file never reaches a plot as text)."""
    train, evals = {}, {}
    path = run / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and type(rec.get("step")) is int:  # ponder writes numbers only: others dropped
                rec = {k: v for k, v in rec.items() if type(v) in (int, float)}
                (evals if any(k.startswith("eval_") for k in rec) else train)[rec["step"]] = rec
    return [train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)]
