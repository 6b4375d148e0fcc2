"""The on-disk dataset format shared by every task: the HRM/TRM layout, read and written.

    <root>/
      identifiers.json              # puzzle identifier -> name; 0 = "<blank>"
      <split>/dataset.json          # metadata (below)
      <split>/all__inputs.npy       # (E, L) uint8/int  token ids of each example's input
      <split>/all__labels.npy       # (E, L)            token ids of the answer; ignore_label_id (0) = not scored
      <split>/all__puzzle_identifiers.npy  # (P,) int32 embedding id of each puzzle
      <split>/all__puzzle_indices.npy      # (P+1,) int32 CSR offsets: puzzle p owns examples [pi[p], pi[p+1])
      <split>/all__group_indices.npy       # (G+1,) int32 CSR offsets: group g owns puzzles [gi[g], gi[g+1])

A *group* is an original puzzle together with all its augmented versions; the official sampler draws one puzzle per
group per epoch. Directories written by the official `dataset/build_*_dataset.py` scripts load here unchanged, and
directories written here load in the official code (same file names, dtypes and `dataset.json` keys).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ponder import UserError
from ponder.files import atomic_open, atomic_write_text, parse_json

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")


@dataclass(frozen=True)
class Metadata:
    """`dataset.json`, with the official `PuzzleDatasetMetadata` keys."""

    seq_len: int
    vocab_size: int
    pad_id: int = 0
    ignore_label_id: int | None = 0
    blank_identifier_id: int = 0
    num_puzzle_identifiers: int = 1
    total_groups: int = 0
    mean_puzzle_examples: float = 1.0
    sets: tuple[str, ...] = ("all",)


@dataclass
class PuzzleArrays:
    """One split in memory (or memory-mapped)."""

    inputs: np.ndarray  # (E, L)
    labels: np.ndarray  # (E, L)
    puzzle_identifiers: np.ndarray  # (P,)
    puzzle_indices: np.ndarray  # (P+1,)
    group_indices: np.ndarray  # (G+1,)

    @property
    def num_examples(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def num_groups(self) -> int:
        return int(self.group_indices.shape[0] - 1)

    def validate(self, where: str = "dataset", meta: Metadata | None = None) -> None:
        """The one check of a split's arrays (on writing, and on reading with the split's `meta`): shapes, integer
        dtypes, at least one example, every group and puzzle non-empty, and with `meta` the sequence length and
        every token, label and puzzle identifier in range. The first violation raises UserError("<where>: <what is
        wrong>")."""
        for name in FIELDS:
            a = getattr(self, name)
            if a.ndim != (2 if name in ("inputs", "labels") else 1):
                raise UserError(f"{where}: {name} has {a.ndim} dimensions; expected "
                                f"{2 if name in ('inputs', 'labels') else 1}")
            if a.dtype.kind not in "iu":
                raise UserError(f"{where}: {name} holds {a.dtype} values; expected integers")
        if self.inputs.shape[0] == 0 or self.inputs.shape[1] == 0:
            raise UserError(f"{where}: holds no examples (an empty split cannot be trained or evaluated on)")
        e, p, g = self.inputs.shape[0], self.puzzle_identifiers.shape[0], self.group_indices.shape[0] - 1
        pi, gi = self.puzzle_indices, self.group_indices
        checks = [  # in order, each only after the ones above it hold (an empty index has no first entry)
            (lambda: self.labels.shape == self.inputs.shape, "inputs and labels must be (E, L) of one shape"),
            (lambda: pi.shape == (p + 1,), "puzzle_indices must have one entry per puzzle + 1"),
            (lambda: p == 0 or (pi[0] == 0 and pi[-1] == e), "puzzle_indices must run from 0 to the number of examples"),
            (lambda: g >= 0 and (g == 0 or (gi[0] == 0 and gi[-1] == p)),
             "group_indices must run from 0 to the number of puzzles"),
            (lambda: bool(np.all(np.diff(pi) >= 1)),
             "every puzzle must own at least one example (puzzle_indices strictly increasing)"),
            (lambda: g >= 1 and bool(np.all(np.diff(gi) >= 1)),
             "every group must own at least one puzzle (group_indices strictly increasing)"),
        ]
        for holds, message in checks:
            if not holds():
                raise UserError(f"{where}: {message}")
        if meta is None:
            return
        if self.inputs.shape[1] != meta.seq_len:
            raise UserError(f"{where}: inputs have length {self.inputs.shape[1]} but dataset.json says seq_len "
                            f"{meta.seq_len}")
        lo, hi = _range(self.inputs)
        if lo < 0 or hi >= meta.vocab_size:
            raise UserError(f"{where}: inputs hold token {lo if lo < 0 else hi}; the vocabulary is 0..{meta.vocab_size - 1}")
        lo, hi = _range(self.labels)
        ignore = meta.ignore_label_id
        if lo < 0 or hi >= meta.vocab_size:  # only the ignore label may lie outside the vocabulary
            outside = np.asarray((self.labels < 0) | (self.labels >= meta.vocab_size))
            bad = np.asarray(self.labels)[outside]
            if ignore is None or np.any(bad != ignore):
                value = bad[bad != ignore][0] if ignore is not None else bad[0]
                raise UserError(f"{where}: labels hold {value}; expected 0..{meta.vocab_size - 1}"
                                + (f" or the ignore label {ignore}" if ignore is not None else ""))
        ids = self.puzzle_identifiers
        if ids.min() < 0 or ids.max() >= meta.num_puzzle_identifiers:
            raise UserError(f"{where}: puzzle_identifiers hold {ids.min() if ids.min() < 0 else ids.max()}; "
                            f"dataset.json allows 0..{meta.num_puzzle_identifiers - 1} (num_puzzle_identifiers)")

    @functools.cached_property
    def example_puzzle_ids(self) -> np.ndarray:
        """(E,) the puzzle identifier of every example (computed once: training reads it every step)."""
        counts = np.diff(self.puzzle_indices)
        return np.repeat(self.puzzle_identifiers, counts).astype(np.int32)


def _range(a: np.ndarray, rows: int = 65536) -> tuple[int, int]:
    """(min, max) of a possibly memory-mapped 2-D array, read in blocks of rows."""
    lo, hi = None, None
    for i in range(0, a.shape[0], rows):
        block = np.asarray(a[i:i + rows])
        lo = int(block.min()) if lo is None else min(lo, int(block.min()))
        hi = int(block.max()) if hi is None else max(hi, int(block.max()))
    return lo, hi


def from_pairs(inputs: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None,
               puzzle_identifiers: np.ndarray | None = None) -> PuzzleArrays:
    """One example per puzzle (Sudoku, Maze, 1dCA). `groups[i]` = group index of puzzle i (non-decreasing)."""
    n = inputs.shape[0]
    groups = np.arange(n) if groups is None else np.asarray(groups)
    assert np.all(np.diff(groups) >= 0), "puzzles of one group must be contiguous"
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]]) if n else np.zeros(0, int)
    return PuzzleArrays(
        inputs=inputs, labels=labels,
        puzzle_identifiers=np.zeros(n, np.int32) if puzzle_identifiers is None else puzzle_identifiers.astype(np.int32),
        puzzle_indices=np.arange(n + 1, dtype=np.int32),
        group_indices=np.r_[starts, n].astype(np.int32),
    )


def write_split(root: str | Path, split: str, arrays: PuzzleArrays, meta: Metadata) -> None:
    """Write `<root>/<split>/` in the official layout (files written to a temp name, then renamed)."""
    arrays.validate(f"{root}/{split}")
    d = Path(root) / split
    d.mkdir(parents=True, exist_ok=True)
    for name in FIELDS:
        a = getattr(arrays, name)
        if name in ("inputs", "labels"):
            a = a.astype(np.uint8) if meta.vocab_size <= 256 else a.astype(np.int32)
        else:
            a = a.astype(np.int32)
        with atomic_open(d / f"all__{name}.npy", "wb") as f:
            np.save(f, a)
    meta = Metadata(**{**asdict(meta), "total_groups": arrays.num_groups,
                       "mean_puzzle_examples": float(arrays.num_examples / max(1, len(arrays.puzzle_identifiers)))})
    body = asdict(meta)
    body["sets"] = list(body["sets"])
    atomic_write_text(d / "dataset.json", json.dumps(body, indent=2))


def write_identifiers(root: str | Path, names: list[str]) -> None:
    atomic_write_text(Path(root) / "identifiers.json", json.dumps(names))


def read_metadata(root: str | Path, split: str) -> Metadata:
    path = Path(root) / split / "dataset.json"
    if not path.exists():
        raise UserError(f"{path}: not found (a dataset directory holds train/ and test/, each with dataset.json)")
    try:
        body = parse_json(path.read_bytes(), str(path))
    except UserError as e:
        raise UserError(f"{path}: malformed dataset.json ({str(e).split(': ', 1)[-1]})") from None
    if not isinstance(body, dict):
        raise UserError(f"{path}: dataset.json must be an object of metadata keys, got {type(body).__name__}")

    def whole(key: str, low: int, high: int = 10**9, optional: bool = False) -> None:
        v = body.get(key)
        if (key not in body and key not in ("seq_len", "vocab_size")) or (v is None and optional):
            return  # absent: the default; null only where it means something (ignore_label_id: every label scored)
        if type(v) is not int or not low <= v <= high:
            raise UserError(f"{path}: {key} must be an integer in {low}..{high}, got {v!r}")

    whole("seq_len", 1, 10**7)
    whole("vocab_size", 2, 10**7)
    whole("pad_id", 0, body["vocab_size"] - 1)
    whole("ignore_label_id", -(2**31), 2**31 - 1, optional=True)
    whole("blank_identifier_id", 0)
    whole("num_puzzle_identifiers", 1, 2**31 - 1)
    sets = body.get("sets", ["all"])
    if not isinstance(sets, list) or not all(isinstance(x, str) for x in sets):
        raise UserError(f"{path}: sets must be a list of names, got {sets!r}")
    body["sets"] = tuple(sets)
    known = set(Metadata.__dataclass_fields__)
    return Metadata(**{k: v for k, v in body.items() if k in known})


def read_split(root: str | Path, split: str, mmap: bool = True) -> tuple[PuzzleArrays, Metadata]:
    """Load a split; inputs/labels memory-mapped as the official loader does."""
    meta = read_metadata(root, split)
    d = Path(root) / split
    arrays = {}
    for name in FIELDS:
        path = d / f"all__{name}.npy"
        if not path.exists():
            raise UserError(f"{path}: not found")
        try:
            arrays[name] = np.load(path, mmap_mode="r" if mmap and name in ("inputs", "labels") else None)
        except Exception as e:  # noqa: BLE001 - np.load fails in many ways on a damaged header (ValueError,
            # SyntaxError and TokenError from its literal_eval, EOFError, OSError): all mean the same to the user
            raise UserError(f"{path}: not a readable .npy file ({e.__class__.__name__})") from None
    out = PuzzleArrays(**arrays)
    out.validate(str(d), meta)
    return out, meta
