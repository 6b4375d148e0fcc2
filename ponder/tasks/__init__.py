"""Tasks by name: one module per task, each a subclass of `ponder.tasks.base.Task` (the protocol and its optional
hooks), registered in `TASKS`. Tasks: Sudoku, Maze, 1D cellular automata (1dCA-Reasoning), ARC-AGI.

A new task = one module here (a `Task` subclass with `name`, `config`, `summary`), its config dataclass in
`ponder.config` (a field of `DataConfig` named like the task), one line in `TASKS`, one preset, one test file;
the CLI's `ponder data <task>` options and help are derived from the config dataclass.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

from ponder import UserError
from ponder.config import DataConfig
from ponder.files import LOCK, MARKER, Output, locked, refuse_link
from ponder.tasks.arc import ArcTask
from ponder.tasks.base import Task
from ponder.tasks.ca1d import Ca1dTask
from ponder.tasks.dataset import Metadata, write_identifiers, write_split
from ponder.tasks.maze import MazeTask
from ponder.tasks.sudoku import SudokuTask

TASKS: dict[str, type[Task]] = {"sudoku": SudokuTask, "maze": MazeTask, "ca1d": Ca1dTask, "arc": ArcTask}


def get_task(cfg: DataConfig) -> Task:
    """The task of data.task, built from its section data.<task>."""
    if cfg.task not in TASKS:
        raise UserError(f"unknown task '{cfg.task}'; known tasks: {', '.join(TASKS)}")
    return TASKS[cfg.task](getattr(cfg, cfg.task))


def task_for(cfg: DataConfig, meta: Metadata, where: str | Path) -> Task:
    """The task of `cfg`, checked against a dataset's metadata (a 4x4 dataset with data.sudoku.size=6 is an error)."""
    task = get_task(cfg)
    want = task.metadata()
    if (want.seq_len, want.vocab_size) != (meta.seq_len, meta.vocab_size):
        raise UserError(f"{where}: dataset has seq_len {meta.seq_len} and vocab {meta.vocab_size}, but the "
                        f"{cfg.task} options of the config give {want.seq_len} and {want.vocab_size} "
                        f"(check the data.{cfg.task}.* keys)")
    return task


def prepare_data(cfg: DataConfig, run_dir: Path, name: str = "data") -> Path:
    """The dataset directory of a run: data.path, or built once into <run>/<name> from the data config."""
    if cfg.path:
        path = Path(cfg.path)
        if not (path / "train" / "dataset.json").exists():
            raise UserError(f"{path}: no dataset here (data.path); build one with `ponder data {cfg.task} --out "
                            f"{path} ...` or leave data.path empty to build it from the data.{cfg.task} options")
        return path
    out = Path(run_dir) / name
    if not (out / "test" / "dataset.json").exists():
        build_dataset(cfg, out)
    return out


def build_dataset(cfg: DataConfig, out: str | Path, force: bool = False) -> Path:
    """Build train/ and test/ of `cfg.task` into `out` (the one path used by `ponder data` and by training).

    Ownership first: the folder's lock is taken (a second build of the same `out` is refused), then the folder is
    checked: one ponder did not make is refused unless empty (or `force`, and then only ponder's own entries are
    replaced: `files.Output`); a dataset already there is rebuilt only with `force`. All or nothing: the dataset is
    built in a hidden sibling folder and moved in entry by entry, each replaced in one rename, so a build that fails
    or is interrupted leaves no half dataset behind, and a retry starts clean."""
    task = get_task(cfg)
    out = Path(out)
    names = task.identifiers(cfg.seed)
    meta = dataclasses.replace(task.metadata(), num_puzzle_identifiers=len(names))
    refuse_link(out)
    made = not out.exists()
    had = {name for name in (LOCK, MARKER) if (out / name).exists()}
    try:
        with locked(out, "dataset"):
            folder = Output(out, "dataset", force=force, legacy=("train/dataset.json",))
            if (out / "train" / "dataset.json").exists() and not force:
                raise UserError(f"{out}: already holds a dataset; pass --force to rebuild it in place")
            _build_into(folder, task, cfg.seed, meta, names)
    except BaseException:
        if made and out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK, MARKER}:
            shutil.rmtree(out, ignore_errors=True)  # a failed first build leaves nothing behind
        elif not made and not (out / "train" / "dataset.json").exists():
            for name in {LOCK, MARKER} - had:  # a refused folder of the user's keeps nothing of ponder's
                (out / name).unlink(missing_ok=True)
        raise
    return out


def _build_into(folder: Output, task: Task, seed: int, meta: Metadata, names: list[str]) -> None:
    out = folder.path
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        for split in ("train", "test"):
            write_split(tmp, split, task.build(split, seed), meta)
        write_identifiers(tmp, names)
        task.extra_files(tmp, seed)
        for entry in sorted(tmp.iterdir()):
            target = folder.entry(entry.name)  # a link, or an entry ponder did not write, is refused
            if target.exists():
                old = tmp / f".old-{entry.name}"
                os.rename(target, old)
                os.rename(entry, target)
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            else:
                os.rename(entry, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
