"""From a dataset split to tensors: the seeded, resumable training stream (`Sampler`) and `batch_tensors`, shared by
the trainer and the evaluator. Labels leave here with IGNORE where nothing is scored."""

from __future__ import annotations

import numpy as np
import torch

from ponder import IGNORE
from ponder.tasks.dataset import PuzzleArrays

# IGNORE (ponder.IGNORE) marks a position without loss in the tensors handed over; on disk the dataset's own
# ignore_label_id (0) marks them


class Sampler:
    """An endless, seeded, resumable stream of training example indices.

    Each epoch visits the groups in a random order, takes one random puzzle per group (an original or one of its
    augmented copies, as the official sampler does) and yields that puzzle's examples. Epoch e is a pure function
    of (seed, e), so the stream position `(epoch, offset)` is the whole state: resuming is exact. Unlike the
    official loader, no draw uses the global unseeded numpy RNG.
    """

    def __init__(self, arrays: PuzzleArrays, seed: int):
        self.arrays, self.seed = arrays, seed
        self.epoch, self.offset = 0, 0
        self._order: np.ndarray | None = None

    def _epoch_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        gi, pi = self.arrays.group_indices, self.arrays.puzzle_indices
        groups = rng.permutation(len(gi) - 1)
        sizes = gi[groups + 1] - gi[groups]
        puzzles = gi[groups] + (rng.random(len(groups)) * sizes).astype(np.int64)
        starts, counts = pi[puzzles], pi[puzzles + 1] - pi[puzzles]
        # examples of each chosen puzzle, concatenated: starts repeated + a running index within each puzzle
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.repeat(starts, counts) + within

    def take(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self._order is None:
                self._order = self._epoch_order(self.epoch)
            chunk = self._order[self.offset:self.offset + k]
            out.append(chunk)
            k -= len(chunk)
            self.offset += len(chunk)
            if self.offset >= len(self._order):
                self.epoch, self.offset, self._order = self.epoch + 1, 0, None
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset, self._order = int(state["epoch"]), int(state["offset"]), None


def batch_tensors(arrays: PuzzleArrays, idx: np.ndarray, ignore_id: int | None, device, task=None,
                  rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows `idx` as (inputs, labels with IGNORE, puzzle ids); optionally re-augmented by the task."""
    order = np.argsort(idx, kind="stable")  # sorted reads from the memory map, then back to stream order
    inputs = np.empty((len(idx), arrays.inputs.shape[1]), np.int64)
    labels = np.empty_like(inputs)
    inputs[order], labels[order] = arrays.inputs[idx[order]], arrays.labels[idx[order]]
    if task is not None:
        inputs, labels = task.augment(rng, inputs, labels)
    pids = arrays.example_puzzle_ids[idx]
    labels = torch.from_numpy(np.ascontiguousarray(labels)).long()
    if ignore_id is not None:
        labels[labels == ignore_id] = IGNORE
    return (torch.from_numpy(np.ascontiguousarray(inputs)).long().to(device), labels.to(device),
            torch.from_numpy(np.asarray(pids)).long().to(device))
