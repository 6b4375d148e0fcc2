"""The task protocol: the base class every task subclasses, and what a task hands the evaluator to draw.

A task knows its tokens (vocabulary, sequence length), builds train/test splits in the shared on-disk format
(`ponder.tasks.dataset`), augments an example without breaking it, scores predictions beyond exact/cell accuracy,
renders an example as text and as a grid of display values. The optional hooks have no-op defaults here, so the
evaluator and the dataset builder call them without asking whether a task has them. Tasks say *what* to draw
(display grids, a palette, box lines, `Sheet`s of titled grids); `ponder.plots` draws it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ponder.tasks.dataset import Metadata, PuzzleArrays


@dataclass
class Tile:
    """One titled grid of a `Sheet`."""

    grid: np.ndarray  # (H, W) display values (indices into the task's palette)
    title: str
    verdict: bool | None = None  # a prediction: True = right (framed green), False = wrong (framed red)


@dataclass
class Sheet:
    """A picture a task asks for: rows of titled grids drawn in the task's palette (`ponder.plots.draw_sheet`)."""

    rows: list[list[Tile]]
    title: str = ""


@dataclass
class Aggregate:
    """What `Task.aggregate` returns: metrics over the pooled answers, and pictures to draw (file stem -> sheet,
    relative to the evaluation's output directory, e.g. "arc_tasks/solved_007bbfb7")."""

    metrics: dict[str, float]
    sheets: dict[str, Sheet] = field(default_factory=dict)


class Task(abc.ABC):
    """A task: subclass it in one module, give it its config section, and add one line to `ponder.tasks.TASKS`."""

    name: str  # key of ponder.tasks.TASKS and of the config section data.<name>
    config: type  # the config dataclass of data.<name> (ponder.config)
    summary: str  # one line for `ponder data --help`
    palette: tuple[str, ...] | None = None  # colours per display value: pictures draw coloured cells, not digits
    box: tuple[int, int] | None = None  # (rows, cols) of the boxes outlined in pictures (Sudoku)
    aggregates: bool = False  # True: the evaluator keeps every test answer at N_sup and calls `aggregate` (ARC)
    teacher_forced: bool = False  # True: the inputs hold the answer (chain of thought): it must be generated
    encoding_keys: tuple[str, ...] = ()  # options that change how examples are written or asked, not which puzzles
    #                                      (1dCA's layout and k): members of `ponder compare` may differ in them
    legend: str = ""  # what the pictures' special cells mean (ARC: PAD and EOS), written under their title

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    @abc.abstractmethod
    def metadata(self) -> Metadata:
        """vocab_size, seq_len and token conventions of the built dataset."""

    @abc.abstractmethod
    def build(self, split: str, seed: int) -> PuzzleArrays:
        """Make split 'train' or 'test' from the task's options; same seed and options -> same arrays."""

    @abc.abstractmethod
    def render(self, inputs: np.ndarray, preds: np.ndarray | None = None, labels: np.ndarray | None = None) -> str:
        """One example as text."""

    @abc.abstractmethod
    def grid(self, tokens: np.ndarray) -> np.ndarray:
        """(L,) tokens -> 2-D array of display values, for pictures (0 = empty)."""

    # -- optional hooks -------------------------------------------------------------------------------------------

    def crop(self, grids: list[np.ndarray]) -> tuple[slice, slice]:
        """The part of these display grids (one example's input, answers, target) a picture shows; default: all."""
        return slice(None), slice(None)

    def augment(self, rng: np.random.Generator, inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A random validity-preserving transform of a batch of examples (B, L) -> (B, L); default: none."""
        return inputs, labels

    def score(self, inputs: np.ndarray, preds: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Task-specific per-example metrics (each a (B,) array in [0, 1]); exact/cell accuracy are generic."""
        return {}

    def strata(self, inputs: np.ndarray) -> np.ndarray | None:
        """(B,) group labels: the evaluator then reports every metric per label (1dCA: per k); None = no groups."""
        return None

    def parse(self, text: str, **options) -> np.ndarray:
        """One puzzle of the user's own, as text (`ponder solve`) -> its (L,) input tokens; `UserError` naming what is
        wrong with it otherwise."""
        from ponder import UserError

        raise UserError(f"ponder solve does not read {self.name} puzzles yet (it reads sudoku, maze, ca1d and arc)")

    def puzzle_id(self, text: str, names: list[str], **options) -> int:
        """The puzzle identifier `ponder solve` gives the user's puzzle (models with a learned per-puzzle embedding):
        0, the blank, unless the task names its puzzles (ARC: the task's own, learned in training)."""
        return 0

    def versions(self, rng: np.random.Generator, inputs: np.ndarray) -> tuple[np.ndarray, Callable] | None:
        """Test-time augmentation (`eval.vote`): one random answer-preserving symmetry of every input (B, L) tokens,
        and the function that takes predictions (B, L) on those versions back to the inputs' own frame. None: the
        task has none (ARC votes over the versions stored in its dataset instead, `aggregate`)."""
        return None

    def prompt_length(self) -> int | None:
        """Where a generated answer starts (causal models decoding token by token); None: answered in one pass."""
        return None

    def answer_positions(self) -> np.ndarray | None:
        """The positions that hold the answer, masked in the inputs (GRPO's parallel sampling draws them); None: the
        task's layout has no fixed answer positions."""
        return None

    def decode(self, inputs: np.ndarray, completion: np.ndarray, reasoning: bool = False) -> np.ndarray:
        """(B, L) predictions aligned with the labels, from the (B, M) tokens generated after the prompt."""
        raise NotImplementedError(f"{self.name} has no generated answers")

    def reward(self, completion: np.ndarray, labels: np.ndarray, reasoning: bool = False) -> np.ndarray:
        """(B,) reward in [0, 1] of a sampled completion (GRPO)."""
        raise NotImplementedError(f"{self.name} defines no reward")

    def policy_refusal(self) -> str | None:
        """Why this task, as configured, cannot be trained by reinforcement (train.regime=grpo needs a prompt, answer
        positions and `reward`), or None when it can."""
        return f"data.task={self.name} defines no reward for train.regime=grpo (the 1dCA task does)"

    def identifiers(self, seed: int) -> list[str]:
        """Puzzle identifier -> name (index 0 = "<blank>"); their count is the dataset's num_puzzle_identifiers.
        A task whose puzzles carry names (ARC: one identifier per augmented version) overrides this."""
        return ["<blank>"]

    def extra_files(self, out: Path, seed: int) -> None:
        """Files a dataset holds besides the two splits (ARC: test_puzzles.json for the evaluator)."""

    def aggregate(self, data_dir: Path, arrays: PuzzleArrays, preds: np.ndarray, q_halt: np.ndarray,
                  out_dir: Path) -> Aggregate:
        """With `aggregates`: pool the answers at N_sup of the whole test split (preds (E, L), q_halt (E,)) into
        task metrics (ARC: votes over augmented versions, pass@k, submission.json)."""
        raise NotImplementedError(f"{self.name} does not aggregate answers")
