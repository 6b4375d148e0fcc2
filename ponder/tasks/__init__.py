"""Tasks: one module per task, each implementing the small `Task` protocol below.

A task knows its tokens (vocabulary, sequence length), builds train/test splits in the shared on-disk format
(`ponder.tasks.dataset`), augments an example without breaking it, scores predictions beyond exact/cell accuracy,
and renders an example as text. Tasks: Sudoku, Maze, 1D cellular automata (1dCA-Reasoning), ARC-AGI.
A task may also define `strata(inputs) -> (B,) labels` (the evaluator then reports every metric per label, e.g.
per k for 1dCA) and `palette` (colours per display value: pictures draw coloured cells instead of digits).
A task whose puzzles carry names (ARC: one identifier per augmented version) defines `identifiers(seed) -> names`
(index 0 = "<blank>"; the dataset's num_puzzle_identifiers is their count), and one that writes more than the two
splits defines `extra_files(out, seed)` (ARC: test_puzzles.json for the evaluator); `build_dataset` calls both.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import numpy as np

from ponder.config import DataConfig
from ponder.tasks.dataset import Metadata, PuzzleArrays


class Task(Protocol):
    name: str

    def metadata(self) -> Metadata:
        """vocab_size, seq_len and token conventions of the built dataset."""

    def build(self, split: str, seed: int) -> PuzzleArrays:
        """Make split 'train' or 'test' from the task's options; same seed and options -> same arrays."""

    def augment(self, rng: np.random.Generator, inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A random validity-preserving transform of a batch of examples (B, L) -> (B, L)."""

    def score(self, inputs: np.ndarray, preds: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Task-specific per-example metrics (each a (B,) array in [0, 1]); exact/cell accuracy are generic."""

    def render(self, inputs: np.ndarray, preds: np.ndarray | None = None, labels: np.ndarray | None = None) -> str:
        """One example as text."""

    def grid(self, tokens: np.ndarray) -> np.ndarray:
        """(L,) tokens -> 2-D array of display values, for pictures (0 = empty)."""


TASKS = ("sudoku", "maze", "ca1d", "arc")  # each a module ponder.tasks.<name> and a sub-config DataConfig.<name>


def get_task(cfg: DataConfig) -> Task:
    if cfg.task not in TASKS:
        from ponder import UserError

        raise UserError(f"unknown task '{cfg.task}'; known tasks: {', '.join(TASKS)}")
    if cfg.task == "sudoku":
        from ponder.tasks.sudoku import SudokuTask

        return SudokuTask(cfg.sudoku)
    if cfg.task == "maze":
        from ponder.tasks.maze import MazeTask

        return MazeTask(cfg.maze)
    if cfg.task == "arc":
        from ponder.tasks.arc import ArcTask

        return ArcTask(cfg.arc)
    from ponder.tasks.ca1d import Ca1dTask

    return Ca1dTask(cfg.ca1d)


def task_for(cfg: DataConfig, meta: Metadata, where: str | Path) -> Task:
    """The task of `cfg`, checked against a dataset's metadata (a 4x4 dataset with data.sudoku.size=6 is an error)."""
    from ponder import UserError

    task = get_task(cfg)
    want = task.metadata()
    if (want.seq_len, want.vocab_size) != (meta.seq_len, meta.vocab_size):
        raise UserError(f"{where}: dataset has seq_len {meta.seq_len} and vocab {meta.vocab_size}, but the "
                        f"{cfg.task} options of the config give {want.seq_len} and {want.vocab_size} "
                        f"(check the data.{cfg.task}.* keys)")
    return task


def prepare_data(cfg: DataConfig, run_dir: Path) -> Path:
    """The dataset directory of a run: data.path, or built once into <run>/data from the data config."""
    from ponder import UserError

    if cfg.path:
        path = Path(cfg.path)
        if not (path / "train" / "dataset.json").exists():
            raise UserError(f"{path}: no dataset here (data.path); build one with `ponder data {cfg.task} --out "
                            f"{path} ...` or leave data.path empty to build it from the data.{cfg.task} options")
        return path
    out = Path(run_dir) / "data"
    if not (out / "test" / "dataset.json").exists():
        build_dataset(cfg, out)
    return out


def build_dataset(cfg: DataConfig, out: str | Path) -> Path:
    """Build train/ and test/ of `cfg.task` into `out` (the one path used by `ponder data` and by training)."""
    from ponder.tasks.dataset import write_identifiers, write_split

    task = get_task(cfg)
    out = Path(out)
    names = task.identifiers(cfg.seed) if hasattr(task, "identifiers") else ["<blank>"]
    meta = dataclasses.replace(task.metadata(), num_puzzle_identifiers=len(names))
    for split in ("train", "test"):
        write_split(out, split, task.build(split, cfg.seed), meta)
    write_identifiers(out, names)
    if hasattr(task, "extra_files"):
        task.extra_files(out, cfg.seed)
    return out
