"""Sudoku: board geometry, a solver, a seeded puzzle generator, the CSV loader, augmentation and the `SudokuTask`.

Design choices:
- Boards of side 4 (2x2 boxes), 6 (boxes of 2 rows x 3 columns) and 9 (3x3). A grid is a flat row-major integer
  array of length size*size, 0 = blank, digits 1..size.
- The solver is pure Python on integer bitmasks (bit d-1 = digit d may go here): naked and hidden singles are
  propagated to a fixed point, then it branches on the unsolved cell with the fewest candidates. Python ints beat
  numpy here: the work is thousands of tiny dependent steps, where numpy's per-call overhead dominates.
- Rating = `guesses`: how many values the search tried at branch points (cells with two or more candidates left
  after propagation), with `limit=2`, i.e. to find the solution *and* prove it unique. The full tree is walked either
  way, so the count does not depend on which value is tried first. 0 = solved by singles alone. The public CSVs'
  `rating` column comes from a plain backtracker without propagation, so its numbers are far larger than ours.
- The generator fills an empty grid by a randomised solve, then blanks cells in a random order, keeping a blank
  only if the solution stays unique. A cell that cannot be blanked never can be later (fewer givens only add
  solutions), so each cell is tried once and a run to the end gives a minimal puzzle. The uniqueness test asks
  "is there a solution with a different digit in the blanked cell?", usually settled by propagation alone.
- Augmentation (as the official builder, generalised to 6x6): digit relabelling, band and row-in-band permutation,
  stack and column-in-stack permutation, and a transpose only where boxes are square (4x4, 9x9).
- Tokens are the official layout: PAD 0, blank 1, digit d -> d + 1 (vocab size + 2). Labels are the full solution,
  givens included, as the official code scores them.
- The CSV loader validates every row with vectorised numpy checks, then explains the first bad row in words:
  `UserError("path:line: what is wrong")`.
- Splits are deterministic in (options, seed): CSV rows come from a seeded permutation; generated puzzles come from
  one seeded stream, deduplicated, train first and test after, so the two are disjoint by construction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ponder import UserError
from ponder.config import SudokuConfig
from ponder.tasks.base import Task
from ponder.tasks.dataset import Metadata, PuzzleArrays, from_pairs
from ponder.tasks.grids import side_by_side
from ponder.tasks.splits import (CsvPairs, GeneratedPairs, bad_rating, check_rows, rating_ok, read_pair_csv,
                                 seeded_rng)

# ---------------------------------------------------------------------------------------------------------------------
# Geometry

BOX_SHAPES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # size -> (rows, columns) of a box
MIN_CLUES = {4: 4, 6: 8, 9: 17}  # fewest givens any uniquely solvable puzzle has (known results), bounds min_blanks


@dataclass(frozen=True)
class Geometry:
    size: int  # board side n
    box_rows: int  # rows per box = rows per band
    box_cols: int  # columns per box = columns per stack
    units: tuple[tuple[int, ...], ...]  # 3n cell tuples: rows, then columns, then boxes
    peers: tuple[tuple[int, ...], ...]  # per cell, the other cells sharing a unit with it
    row: tuple[int, ...]  # per cell, its row / column / box index
    col: tuple[int, ...]
    box: tuple[int, ...]

    @property
    def cells(self) -> int:
        return self.size * self.size

    @property
    def full(self) -> int:
        """The candidate mask with every digit."""
        return (1 << self.size) - 1


@functools.cache
def geometry(size: int) -> Geometry:
    if size not in BOX_SHAPES:
        raise UserError(f"Sudoku size must be one of {sorted(BOX_SHAPES)}, got {size}")
    br, bc = BOX_SHAPES[size]
    cells = range(size * size)
    row = tuple(c // size for c in cells)
    col = tuple(c % size for c in cells)
    # Boxes are numbered row-major: size // bc boxes across each band.
    box = tuple((row[c] // br) * (size // bc) + col[c] // bc for c in cells)
    units = tuple(tuple(c for c in cells if key[c] == k) for key in (row, col, box) for k in range(size))
    peers = tuple(tuple(p for p in cells if p != c and (row[p] == row[c] or col[p] == col[c] or box[p] == box[c]))
                  for c in cells)
    return Geometry(size, br, bc, units, peers, row, col, box)


def _check_grids(grids: np.ndarray, size: int) -> np.ndarray:
    """`grids` as an array, after checking its last axis holds n*n cells of digits 0..n (the solver's bit tricks
    would silently misread anything else)."""
    grids = np.asarray(grids)
    n = geometry(size).size
    if grids.shape[-1] != n * n:
        raise ValueError(f"a {n}x{n} Sudoku grid has {n * n} cells, got shape {grids.shape}")
    if grids.size and (grids.min() < 0 or grids.max() > n):
        raise ValueError(f"{n}x{n} Sudoku digits must be 0..{n}")
    return grids


def valid_solutions(grids: np.ndarray, size: int) -> np.ndarray:
    """(B, n*n) digits -> (B,) bool: every row, column and box holds each digit 1..n exactly once."""
    geo = geometry(size)
    n = geo.size
    g = np.asarray(grids).astype(np.int64)
    # A cell with a digit outside 1..n contributes no bit, so the OR of a unit can only be full if all n are present;
    # n cells covering n distinct bits means each appears exactly once.
    bits = np.where((g >= 1) & (g <= n), np.left_shift(1, np.clip(g - 1, 0, n - 1)), 0)
    boards = bits.reshape(-1, n // geo.box_rows, geo.box_rows, n // geo.box_cols, geo.box_cols)  # (B, band, r, stack, c)
    rows = np.bitwise_or.reduce(boards, axis=(3, 4)).reshape(len(g), n)
    cols = np.bitwise_or.reduce(boards, axis=(1, 2)).reshape(len(g), n)
    boxes = np.bitwise_or.reduce(boards, axis=(2, 4)).reshape(len(g), n)
    return np.all(np.concatenate([rows, cols, boxes], axis=1) == geo.full, axis=1)


def is_valid_solution(grid: np.ndarray, size: int) -> bool:
    """Is `grid` (n*n digits) a complete, rule-abiding Sudoku? Blanks and out-of-range values make it False."""
    grid = np.asarray(grid).reshape(-1)
    return grid.shape == (size * size,) and bool(valid_solutions(grid[None], size)[0])


# ---------------------------------------------------------------------------------------------------------------------
# Solver


@dataclass
class SolveResult:
    solutions: list[np.ndarray]  # up to `limit` complete grids (n*n digits), in search order
    guesses: int  # values tried at branch points (cells with >= 2 candidates after propagation): the rating


def _propagate(cand: list[int], queue: list[int], geo: Geometry, hidden: bool = True) -> bool:
    """Place naked (and, if `hidden`, hidden) singles until nothing changes, in place. `queue` holds cells just fixed
    to one digit whose digit is not yet removed from their peers. Returns False on a contradiction."""
    peers, full = geo.peers, geo.full
    while True:
        # Naked singles: a fixed cell's digit leaves every peer; a peer left with one digit is fixed in turn.
        while queue:
            c = queue.pop()
            bit = cand[c]
            for p in peers[c]:
                m = cand[p]
                if m & bit:
                    m ^= bit
                    if not m:
                        return False
                    cand[p] = m
                    if not m & (m - 1):
                        queue.append(p)
        if not hidden:
            return True
        # Hidden singles: a digit with one possible cell in a unit goes there. `once`/`twice` = digits seen in at
        # least one / two cells of the unit. A stale superset of candidates only delays findings, never invents them.
        for unit in geo.units:
            once = twice = 0
            for c in unit:
                m = cand[c]
                twice |= once & m
                once |= m
            if once != full:
                return False  # some digit has no cell left in this unit
            alone = once & ~twice
            if alone:
                for c in unit:
                    m = cand[c] & alone
                    if m and cand[c] != m:
                        if m & (m - 1):
                            return False  # one cell is the only place for two digits
                        cand[c] = m
                        queue.append(c)
        if not queue:
            return True


def _search(cand: list[int], geo: Geometry, limit: int, found: list[list[int]], order: list[list[int]] | None = None,
            hidden: bool = True) -> int:
    """Depth-first search from a propagated state; appends solutions to `found` up to `limit`. `order[c]` = digit bits
    in the order to try them at cell c (None = lowest first). Returns the number of guesses made."""
    best, best_count = -1, 99
    for c in range(geo.cells):
        m = cand[c]
        if m & (m - 1):
            k = m.bit_count()
            if k < best_count:
                best, best_count = c, k
                if k == 2:
                    break  # no unsolved cell has fewer
    if best < 0:
        found.append(cand)
        return 0
    m = cand[best]
    bits = [b for b in order[best] if m & b] if order is not None else [1 << i for i in range(geo.size) if m >> i & 1]
    guesses = 0
    for bit in bits:
        guesses += 1
        child = cand[:]
        child[best] = bit
        if _propagate(child, [best], geo, hidden):
            guesses += _search(child, geo, limit, found, order, hidden)
            if len(found) >= limit:
                break
    return guesses


def _candidates(grid: list[int], geo: Geometry) -> tuple[list[int], list[int]]:
    """Digits -> (candidate masks, cells to propagate). Givens are fixed; blanks start with every digit."""
    cand = [geo.full if d == 0 else 1 << (d - 1) for d in grid]
    return cand, [c for c, d in enumerate(grid) if d]


def _to_digits(cand: list[int]) -> np.ndarray:
    return np.array([m.bit_length() for m in cand], dtype=np.uint8)


def solve(grid: np.ndarray, size: int, limit: int = 2) -> SolveResult:
    """Up to `limit` solutions of `grid` (n*n digits, 0 = blank) and the guesses it took (see the module docstring).
    `limit=2` is enough to tell unique from ambiguous; an unsolvable grid has no solutions."""
    geo = geometry(size)
    cand, queue = _candidates([int(d) for d in _check_grids(grid, size).reshape(-1)], geo)
    found: list[list[int]] = []
    guesses = _search(cand, geo, limit, found) if _propagate(cand, queue, geo) else 0
    return SolveResult([_to_digits(s) for s in found], guesses)


def is_unique(grid: np.ndarray, size: int) -> bool:
    """Does `grid` have exactly one solution?"""
    return len(solve(grid, size, limit=2).solutions) == 1


def singles_fill(puzzles: np.ndarray, size: int) -> np.ndarray:
    """(N, n*n) puzzles (0 = blank) -> (N,) float: the share of each puzzle's blanks that naked and hidden singles
    fix, applied until nothing changes (no guess, no other technique). 1.0 = solved by propagation alone; a model
    that has learned only the rules' direct consequences gets no further (`bench/sudoku_hardness.py`)."""
    geo = geometry(size)
    shares = []
    for grid in _check_grids(puzzles, size).reshape(len(puzzles), -1).tolist():
        cand, queue = _candidates(grid, geo)
        _propagate(cand, queue, geo)
        blanks = [c for c, d in enumerate(grid) if not d]
        fixed = sum(1 for c in blanks if cand[c] and not cand[c] & (cand[c] - 1))
        shares.append(fixed / len(blanks) if blanks else 1.0)
    return np.array(shares)


# ---------------------------------------------------------------------------------------------------------------------
# Generator

MAX_ATTEMPTS = 1000  # rejected puzzles before generate() gives up on unreachable min_blanks / min_rating


def _hidden_pays(geo: Geometry) -> bool:
    """Whether the generator's searches should scan for hidden singles. On 4x4 and 6x6 boards the scan costs more
    than it prunes (6x6 minimal puzzles come 2.3x faster without it); on 9x9 it keeps rare hard searches short (the
    top1465 puzzles need 40x longer without it)."""
    return geo.size == 9


def _random_full_grid(rng: np.random.Generator, geo: Geometry) -> list[int]:
    """A random complete grid: a solve of the empty grid trying digits in a random order at every cell."""
    n = geo.size
    order = (1 << np.argsort(rng.random((geo.cells, n)), axis=1)).tolist()  # (n*n, n) digit bits in random order
    # Any complete grid relabels to one with a given first row, so a random first row loses no grids and saves
    # the search n levels.
    cand = [geo.full] * geo.cells
    cand[:n] = order[0]
    queue = list(range(n))
    found: list[list[int]] = []
    hidden = _hidden_pays(geo)
    _propagate(cand, queue, geo, hidden)
    _search(cand, geo, 1, found, order, hidden)
    return [m.bit_length() for m in found[0]]


def _other_solution_exists(grid: list[int], cell: int, digit: int, used: tuple[list[int], list[int], list[int]],
                           geo: Geometry) -> bool:
    """With `cell` blank in `grid` (and `used` its row/column/box digit masks), can `cell` take a digit other than
    `digit` in some solution?"""
    rows, cols, boxes = used
    gr, gc, gb, full = geo.row, geo.col, geo.box, geo.full
    cand = [1 << (d - 1) if d else full & ~(rows[gr[c]] | cols[gc[c]] | boxes[gb[c]]) for c, d in enumerate(grid)]
    cand[cell] &= ~(1 << (digit - 1))
    # Givens are already out of their blank peers' masks; only blanks down to one digit (or none) remain to propagate.
    queue = [c for c, d in enumerate(grid) if not d and not cand[c] & (cand[c] - 1)]
    if any(not cand[c] for c in queue):
        return False
    hidden = _hidden_pays(geo)
    found: list[list[int]] = []
    if _propagate(cand, queue, geo, hidden):
        _search(cand, geo, 1, found, None, hidden)
    return bool(found)


def _blank_cells(solution: list[int], order: np.ndarray, target: int, geo: Geometry) -> list[int]:
    """Blank cells of `solution` in `order`, keeping the solution unique, until `target` blanks or the end."""
    grid = list(solution)
    rows, cols, boxes = [0] * geo.size, [0] * geo.size, [0] * geo.size
    for c, d in enumerate(grid):
        rows[geo.row[c]] |= 1 << (d - 1)
        cols[geo.col[c]] |= 1 << (d - 1)
        boxes[geo.box[c]] |= 1 << (d - 1)
    blanks = 0
    for c in order.tolist():
        if blanks >= target:
            break
        d, bit = grid[c], 1 << (grid[c] - 1)
        r, k, b = geo.row[c], geo.col[c], geo.box[c]
        rows[r] ^= bit
        cols[k] ^= bit
        boxes[b] ^= bit
        grid[c] = 0
        # Fast path: the givens around the cell leave it only its own digit (a naked single), so it stays unique.
        if (rows[r] | cols[k] | boxes[b]) | bit == geo.full or not _other_solution_exists(grid, c, d,
                                                                                      (rows, cols, boxes), geo):
            blanks += 1
        else:
            grid[c] = d
            rows[r] |= bit
            cols[k] |= bit
            boxes[b] |= bit
    return grid


def generate(rng: np.random.Generator, size: int, min_blanks: int = 0, max_blanks: int = 0,
             min_rating: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """A random puzzle with a unique solution -> (puzzle, solution, rating), each grid n*n uint8 digits.

    Blanks are removed up to a target drawn uniformly from [min_blanks, max_blanks]; max_blanks = 0 means no upper
    limit (blank until minimal: no given can go without losing uniqueness). Puzzles with fewer than `min_blanks`
    blanks or a rating below `min_rating` are rejected and redrawn. Same generator state -> same puzzle.
    """
    geo = geometry(size)
    cells = geo.cells
    limit = cells - MIN_CLUES[size]
    if not 0 <= min_blanks <= limit or not 0 <= max_blanks <= cells or (max_blanks and min_blanks > max_blanks):
        raise UserError(f"{size}x{size} Sudoku blanks must satisfy 0 <= min_blanks ({min_blanks}) <= max_blanks "
                        f"({max_blanks}, 0 = no limit) <= {cells}, and min_blanks <= {limit} "
                        f"(no unique {size}x{size} puzzle has fewer than {MIN_CLUES[size]} givens)")
    for _ in range(MAX_ATTEMPTS):
        solution = _random_full_grid(rng, geo)
        target = int(rng.integers(min_blanks, max_blanks + 1)) if max_blanks else cells
        puzzle = _blank_cells(solution, rng.permutation(cells), target, geo)
        if puzzle.count(0) < min_blanks:
            continue
        grid = np.array(puzzle, dtype=np.uint8)
        rating = solve(grid, size, limit=2).guesses
        if rating >= min_rating:
            return grid, np.array(solution, dtype=np.uint8), rating
    raise UserError(f"no {size}x{size} puzzle with >= {min_blanks} blanks and rating >= {min_rating} in "
                    f"{MAX_ATTEMPTS} attempts; lower data.sudoku.min_blanks or data.sudoku.min_rating")


# ---------------------------------------------------------------------------------------------------------------------
# CSV


def _lookup(size: int, blanks: str) -> np.ndarray:
    """ASCII byte -> digit (0 for a blank character), 255 for anything not allowed."""
    table = np.full(256, 255, np.uint8)
    for ch in blanks:
        table[ord(ch)] = 0
    table[ord("1"):ord("1") + size] = np.arange(1, size + 1)
    return table


def _explain(question: str, answer: str, rating: str, size: int) -> str:
    """Why one CSV row is bad, in words (the vectorised checks only say *that* it is)."""
    cells, top = size * size, str(size)
    for name, text in (("question", question), ("answer", answer)):
        if len(text) != cells:
            return f"{name} has {len(text)} characters, expected {cells} (a {size}x{size} grid, row-major)"
    for name, text, allowed in (("question", question, f"'.', '0' or a digit 1-{top}"),
                                ("answer", answer, f"a digit 1-{top}")):
        table = _lookup(size, ".0" if name == "question" else "")
        for i, ch in enumerate(text):
            if not ch.isascii() or table[ord(ch)] == 255:
                return f"{name} has {ch!r} at position {i + 1}, expected {allowed}"
    for i, (q, a) in enumerate(zip(question, answer)):
        if q not in ".0" and q != a:
            return f"given {q} at row {i // size + 1}, column {i % size + 1} disagrees with the answer's {a}"
    geo = geometry(size)
    for u, unit in enumerate(geo.units):
        digits = [answer[c] for c in unit]
        repeated = next((d for d in digits if digits.count(d) > 1), None)
        if repeated is not None:
            kind = ("row", "column", "box")[u // size]
            return f"answer is not a valid Sudoku: {kind} {u % size + 1} repeats the digit {repeated}"
    return bad_rating(rating)


def load_csv(path: str | Path, size: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Sudoku CSV (header naming `question` and `answer`, optionally `rating`; '.' or '0' = blank) ->
    (questions (N, n*n) uint8, answers (N, n*n) uint8, ratings (N,) int64; 0 where there is no rating column).

    Every row is checked (field count, length, characters, givens agreeing with the answer, the answer a valid
    grid, an integer rating); the first bad one raises `UserError("path:line: ...")`, lines counted from 1 = header.
    """
    path = Path(path)
    cells = geometry(size).cells
    questions, answers, ratings, lines, field_error = read_pair_csv(path, "Sudoku")

    # Vectorised checks over all rows; rows of the wrong length get a stand-in so the rest stays rectangular.
    right_length = np.array([len(q) == cells and len(a) == cells for q, a in zip(questions, answers)], dtype=bool)
    q_text = "".join(q if ok else "." * cells for q, ok in zip(questions, right_length))
    a_text = "".join(a if ok else "1" * cells for a, ok in zip(answers, right_length))
    # Non-ASCII characters become '?' (one byte each, so positions hold) and fail the character check.
    q_bytes = np.frombuffer(q_text.encode("ascii", "replace"), np.uint8).reshape(-1, cells)
    a_bytes = np.frombuffer(a_text.encode("ascii", "replace"), np.uint8).reshape(-1, cells)
    q = _lookup(size, ".0")[q_bytes]  # (N, n*n) digits, 255 = bad character
    a = _lookup(size, "")[a_bytes]
    good_chars = np.all(q != 255, axis=1) & np.all(a != 255, axis=1)
    agrees = np.all((q == 0) | (q == a) | (q == 255), axis=1)
    good_rating = np.array([rating_ok(r) for r in ratings], dtype=bool)
    good = right_length & good_chars & agrees & valid_solutions(np.where(a == 255, 0, a), size) & good_rating
    check_rows(path, good, lines, lambda i: _explain(questions[i], answers[i], ratings[i], size), field_error,
               "puzzles")
    return q, a, np.array([int(r) for r in ratings], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------------------
# Augmentation


def random_transforms(rng: np.random.Generator, batch: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`batch` random symmetries -> (relabel (B, n): new digit of digit d at [d-1], source (B, n*n): the cell each
    output cell is read from). Every map here sends valid grids to valid grids."""
    geo = geometry(size)
    n, br, bc = size, geo.box_rows, geo.box_cols
    relabel = np.argsort(rng.random((batch, n)), axis=1) + 1
    # Rows move only within their band and bands move as a whole, so every box keeps its cells together;
    # the same for columns within stacks.
    bands = np.argsort(rng.random((batch, n // br)), axis=1)  # (B, bands) source band of each output band
    rows = (bands[:, :, None] * br + np.argsort(rng.random((batch, n // br, br)), axis=2)).reshape(batch, n)
    stacks = np.argsort(rng.random((batch, n // bc)), axis=1)
    cols = (stacks[:, :, None] * bc + np.argsort(rng.random((batch, n // bc, bc)), axis=2)).reshape(batch, n)
    source = rows[:, :, None] * n + cols[:, None, :]  # (B, n, n)
    if br == bc:
        # A transpose turns 2x3 boxes into 3x2 ones, which are not boxes of a 6x6 board, so a transposed 6x6 grid
        # breaks the box rule; with square boxes (4x4, 9x9) boxes map onto boxes. Output (i, j) then reads the
        # source (cols[j], rows[i]), as the official builder's transpose-then-permute.
        flip = rng.random(batch) < 0.5
        source = np.where(flip[:, None, None], cols[:, None, :] * n + rows[:, :, None], source)
    return relabel, source.reshape(batch, n * n)


def _apply(values: np.ndarray, value_map: np.ndarray, source: np.ndarray) -> np.ndarray:
    """out[b, i] = value_map[b, values[b, source[b, i]]], in the dtype of `values`."""
    moved = np.take_along_axis(values.astype(np.intp), source, axis=1)
    return np.take_along_axis(value_map, moved, axis=1).astype(values.dtype)


def augment_grids(rng: np.random.Generator, puzzles: np.ndarray, solutions: np.ndarray,
                  size: int) -> tuple[np.ndarray, np.ndarray]:
    """A random validity-preserving symmetry per example, the same for its puzzle and solution:
    (B, n*n) digits (0 = blank, which stays blank) -> (B, n*n)."""
    puzzles, solutions = _check_grids(puzzles, size), _check_grids(solutions, size)
    assert puzzles.ndim == 2 and puzzles.shape == solutions.shape, "puzzles and solutions must both be (B, n*n)"
    relabel, source = random_transforms(rng, len(puzzles), size)
    value_map = np.concatenate([np.zeros((len(puzzles), 1), relabel.dtype), relabel], axis=1)  # (B, n+1), 0 -> 0
    return _apply(puzzles, value_map, source), _apply(solutions, value_map, source)


# ---------------------------------------------------------------------------------------------------------------------
# Symmetry classes


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic is the point)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _hash_rows(values: np.ndarray) -> np.ndarray:
    """(..., k) integers -> (...) uint64, a hash of each sequence along the last axis (order matters)."""
    h = np.full(values.shape[:-1], 0x9E3779B97F4A7C15, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(values.shape[-1]):
            h = _mix(h ^ values[..., k].astype(np.uint64) + np.uint64(k))
    return h


def _line_structure(grids: np.ndarray, per_band: int) -> np.ndarray:
    """(N, n, n) complete grids (digits 0..n-1) -> (N,) uint64 describing their rows up to the symmetries.

    For two rows r1, r2 the map "column of a digit in r1 -> column of the same digit in r2" is a permutation of the
    columns; its cycle type does not change under a relabelling (it follows digits, not their names) or a column
    permutation (which conjugates it). Each row's signature is the sorted list of (cycle type, same band?) towards
    the other rows; a band's is the sorted list of its rows' signatures, and the grid's the sorted list of its
    bands': the same under any permutation of rows within bands and of bands."""
    count, n, _ = grids.shape
    position = np.argsort(grids, axis=2)  # [b, r, d] = column of digit d in row r (each row holds every digit once)
    first, second = np.triu_indices(n, 1)
    perm = np.take_along_axis(position[:, second], grids[:, first], axis=2)  # (N, pairs, n)
    length, current, home = np.zeros_like(perm), perm, np.arange(n)
    for k in range(1, n + 1):  # the length of the cycle through each column
        length[(current == home) & (length == 0)] = k
        current = np.take_along_axis(perm, current, axis=2)
    cycle_type = (np.int64(n + 1) ** (length - 1)).sum(-1)  # how many columns lie on cycles of each length, in base n+1
    code = cycle_type * 2 + (first // per_band == second // per_band)
    towards = np.full((count, n, n), -1, np.int64)
    towards[:, first, second] = towards[:, second, first] = code
    rows = _hash_rows(np.sort(towards, axis=2))  # (N, n)
    bands = _hash_rows(np.sort(rows.reshape(count, n // per_band, per_band), axis=2))
    return _hash_rows(np.sort(bands, axis=1))


def grid_classes(solutions: np.ndarray, size: int) -> np.ndarray:
    """(N, n*n) complete grids -> (N,) uint64: a fingerprint of each grid's symmetry class, equal for two grids that
    a relabelling, row/column permutation within bands/stacks, band/stack permutation or (square boxes) a transpose
    maps onto each other, i.e. for any `augment_grids` of a grid. Different classes share a fingerprint only by a
    hash collision (~N^2 / 2^64) or when their row and column structures coincide, so a split that keeps the
    fingerprints of its test grids out of training keeps every symmetry of a test puzzle out (and a little more)."""
    geo = geometry(size)
    grids = _check_grids(solutions, size).reshape(-1, size, size).astype(np.int64) - 1
    if len(grids) and grids.min() < 0:
        raise ValueError("grid_classes takes complete grids (no blanks)")
    rows = _line_structure(grids, geo.box_rows)
    cols = _line_structure(grids.transpose(0, 2, 1).copy(), geo.box_cols)
    pair = np.stack([rows, cols], axis=1)
    if geo.box_rows == geo.box_cols:  # a transpose swaps the two
        pair = np.sort(pair, axis=1)
    return _hash_rows(pair)


# ---------------------------------------------------------------------------------------------------------------------
# The task

PAD, BLANK = 0, 1  # tokens; digit d is token d + 1 (official layout)
AUG_CHUNK = 1 << 16  # augmented examples per vectorised call (bounds memory; fixed so that results never depend on it)


class SudokuTask(Task):
    """Sudoku for the recursive models: n*n tokens in, the n*n solution tokens out."""

    name = "sudoku"
    config = SudokuConfig
    summary = "generated n x n Sudoku (4, 6, 9) or the public CSV files"

    def __init__(self, cfg: SudokuConfig) -> None:
        self.cfg = cfg
        self.size = cfg.size
        self.box = BOX_SHAPES[cfg.size]  # (rows, cols) of a box, for pictures
        self._csv = CsvPairs(lambda path: load_csv(path, self.size)[:2], "puzzles", "data.sudoku")
        self._generator = GeneratedPairs(
            lambda rng: generate(rng, self.size, cfg.min_blanks, cfg.max_blanks, cfg.min_rating)[:2],
            f"{self.size}x{self.size} puzzles", "data.sudoku")
        test_blanks = (cfg.min_blanks if cfg.test_min_blanks < 0 else cfg.test_min_blanks,
                       cfg.max_blanks if cfg.test_max_blanks < 0 else cfg.test_max_blanks)
        self._test_generator = None if test_blanks == (cfg.min_blanks, cfg.max_blanks) else GeneratedPairs(
            lambda rng: generate(rng, self.size, *test_blanks, cfg.min_rating)[:2],
            f"{self.size}x{self.size} test puzzles", "data.sudoku", stream="generate-test")

    def metadata(self) -> Metadata:
        return Metadata(seq_len=self.size * self.size, vocab_size=self.size + 2)

    # -- building

    def build(self, split: str, seed: int) -> PuzzleArrays:
        if split not in ("train", "test"):
            raise UserError(f"unknown split {split!r}; expected 'train' or 'test'")
        cfg = self.cfg
        if cfg.csv and split == "train":
            puzzles, solutions = self._csv_training(seed)
        elif cfg.csv or (split == "test" and cfg.test_csv):  # a public test set also beside generated training
            puzzles, solutions = self._csv.split(split, seed, cfg.csv, cfg.test_csv, cfg.train_size, cfg.test_size)
        elif split == "test" and self._test_generator is not None:  # other blank counts: their own stream
            _, train_solutions = self._generator.split("train", seed, cfg.train_size, 0)
            known = {s.tobytes() for s in train_solutions}
            puzzles, solutions = self._test_generator.split("train", seed, cfg.test_size + 16, 0)
            fresh = np.array([s.tobytes() not in known for s in solutions])  # a shared grid: ~1e-6 chance
            puzzles, solutions = puzzles[fresh][:cfg.test_size], solutions[fresh][:cfg.test_size]
        else:
            puzzles, solutions = self._generator.split(split, seed, cfg.train_size, cfg.test_size)
        if split == "test":
            return from_pairs(puzzles + 1, solutions + 1)
        # Train: each puzzle, then its num_aug augmented copies, all in the puzzle's group (official layout).
        copies = self.cfg.num_aug
        out_p = np.empty((len(puzzles), 1 + copies, puzzles.shape[1]), np.uint8)
        out_s = np.empty_like(out_p)
        out_p[:, 0], out_s[:, 0] = puzzles, solutions
        rng = seeded_rng(seed, "augment")
        step = max(1, AUG_CHUNK // max(1, copies))  # puzzles per call
        for start in range(0, len(puzzles) if copies else 0, step):  # num_aug = 0: originals only
            stop = start + step
            aug_p, aug_s = augment_grids(rng, np.repeat(puzzles[start:stop], copies, axis=0),
                                         np.repeat(solutions[start:stop], copies, axis=0), self.size)
            out_p[start:stop, 1:] = aug_p.reshape(-1, copies, puzzles.shape[1])
            out_s[start:stop, 1:] = aug_s.reshape(-1, copies, puzzles.shape[1])
        groups = np.repeat(np.arange(len(puzzles)), 1 + copies)
        return from_pairs(out_p.reshape(-1, puzzles.shape[1]) + 1, out_s.reshape(-1, puzzles.shape[1]) + 1, groups)

    def _csv_training(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The training rows of `csv` (plus `generated` puzzles) whose solution grid is no symmetry of a test grid
        or of one in the `exclude` files: no augmentation of an unseen puzzle is ever trained on. Public lists hold
        symmetric copies (tdoku-hard: 2,854 of its 39,420 distinct grids), so the row split alone would leak."""
        cfg = self.cfg
        puzzles, solutions = self._csv.split("train", seed, cfg.csv, cfg.test_csv, cfg.train_size, cfg.test_size)
        unseen = [self._csv.split("test", seed, cfg.csv, cfg.test_csv, cfg.train_size, cfg.test_size)[1]]
        unseen += [self._csv.read(path)[1] for path in cfg.exclude]  # every file read (and checked) before generating
        if cfg.generated:
            extra = self._generator.split("train", seed, cfg.generated, 0)
            puzzles, solutions = np.concatenate([puzzles, extra[0]]), np.concatenate([solutions, extra[1]])
        keep = ~np.isin(grid_classes(solutions, self.size), grid_classes(np.concatenate(unseen), self.size))
        if not keep.any():
            raise UserError(f"{cfg.csv}: every training puzzle is a symmetry of a test or excluded one")
        return puzzles[keep], solutions[keep]

    # -- training and evaluation helpers

    def augment(self, rng: np.random.Generator, inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """On-the-fly augmentation of token batches (B, n*n); PAD and blank tokens keep their meaning."""
        assert inputs.ndim == 2 and inputs.shape == labels.shape and inputs.shape[1] == self.size ** 2, \
            f"expected inputs and labels of shape (B, {self.size ** 2}), got {inputs.shape} and {labels.shape}"
        token_map, source = self._token_transforms(rng, len(inputs))
        return _apply(inputs, token_map, source), _apply(labels, token_map, source)

    def _token_transforms(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` random symmetries on tokens: (token map (B, n+2), PAD and blank fixed; source cells (B, n*n))."""
        relabel, source = random_transforms(rng, count, self.size)
        fixed = np.broadcast_to(np.array([PAD, BLANK]), (count, 2))
        return np.concatenate([fixed, relabel + 1], axis=1), source

    def versions(self, rng: np.random.Generator, inputs: np.ndarray) -> tuple[np.ndarray, Callable]:
        """A random relabelling / band, stack, row, column permutation / transposition of every puzzle (B, n*n)
        tokens, and the inverse map for predictions on them (PAD and blank map to themselves both ways)."""
        count, cells = inputs.shape
        token_map, source = self._token_transforms(rng, count)
        back_map, back_source = np.empty_like(token_map), np.empty_like(source)
        np.put_along_axis(back_map, token_map, np.arange(token_map.shape[1])[None], axis=1)
        np.put_along_axis(back_source, source, np.arange(cells)[None], axis=1)
        # Predictions may hold any token of the vocabulary; those outside the map (none here) would be clipped.
        return _apply(inputs, token_map, source), lambda preds: _apply(np.asarray(preds), back_map, back_source)

    def score(self, inputs: np.ndarray, preds: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """valid: the prediction is a complete grid obeying the rules and keeping every given. It can differ from the
        label only if the puzzle has several solutions (never for the unique puzzles built here)."""
        preds, inputs = np.asarray(preds).astype(np.int64), np.asarray(inputs).astype(np.int64)
        keeps_givens = np.all((inputs <= BLANK) | (preds == inputs), axis=1)
        return {"valid": (valid_solutions(preds - 1, self.size) & keeps_givens).astype(np.float32),
                "rule_breaking_cells": self.conflicts(inputs, preds).mean(1, dtype=np.float32)}

    def conflicts(self, inputs: np.ndarray, preds: np.ndarray) -> np.ndarray:
        """(B, n*n) tokens -> (B, n*n) bool: the cells of a prediction that break a rule: no digit, a digit that
        appears twice in one of the cell's row, column or box, or a changed given."""
        geo, n = geometry(self.size), self.size
        digits = np.asarray(preds).astype(np.int64) - 1  # 1..n for digits
        is_digit = (digits >= 1) & (digits <= n)
        onehot = (digits[:, :, None] == np.arange(1, n + 1)) & is_digit[:, :, None]  # (B, cells, n)
        per_unit = onehot[:, np.array(geo.units)].sum(2)  # (B, 3n units, n) how often each digit is in each unit
        units_of = np.stack([np.array(geo.row), n + np.array(geo.col), 2 * n + np.array(geo.box)], axis=1)  # (cells, 3)
        batch = np.arange(len(digits))[:, None, None]
        twice = per_unit[batch, units_of[None], np.clip(digits - 1, 0, n - 1)[:, :, None]] > 1  # (B, cells, 3)
        given = np.asarray(inputs).astype(np.int64) > BLANK
        return ~is_digit | twice.any(2) | (given & (np.asarray(preds) != np.asarray(inputs)))

    def parse(self, text: str, **options) -> np.ndarray:
        """A puzzle as text: its n*n cells row by row, digits 1-n and '.', '0' or '_' for blanks; whitespace and the
        '|', '+', '-' of a drawn grid and lines of words (as `render` draws it, "puzzle" above) are skipped."""
        n = self.size
        text = "\n".join(line for line in text.splitlines()  # a title line: words, no cell
                          if not (any(ch.isalpha() for ch in line) and not any(ch in "._0123456789" for ch in line)))
        cells = [ch for ch in text if not ch.isspace() and ch not in "|+-"]
        if len(cells) != n * n:
            raise UserError(f"this model solves {n}x{n} Sudoku: {n * n} cells (digits 1-{n}, '.' or '0' for a "
                            f"blank), got {len(cells)}")
        table = _lookup(n, "._0")
        for i, ch in enumerate(cells):
            if not ch.isascii() or table[ord(ch)] == 255:
                raise UserError(f"cell {i + 1} (row {i // n + 1}, column {i % n + 1}) is {ch!r}; a {n}x{n} Sudoku "
                                f"holds digits 1-{n} and '.', '0' or '_' for blanks")
        digits = table[np.frombuffer("".join(cells).encode(), np.uint8)]
        geo = geometry(n)
        for u, unit in enumerate(geo.units):
            given = [int(digits[c]) for c in unit if digits[c]]
            repeated = next((d for d in given if given.count(d) > 1), None)
            if repeated is not None:
                raise UserError(f"not a valid puzzle: {('row', 'column', 'box')[u // n]} {u % n + 1} has the digit "
                                f"{repeated} twice")
        return digits.astype(np.uint8) + 1

    def grid(self, tokens: np.ndarray) -> np.ndarray:
        """(n*n,) tokens -> (n, n) digits, 0 for blank or PAD."""
        return np.clip(np.asarray(tokens).astype(np.int64) - 1, 0, None).reshape(self.size, self.size)

    def render(self, inputs: np.ndarray, preds: np.ndarray | None = None, labels: np.ndarray | None = None) -> str:
        """The puzzle, and beside it the prediction (wrong cells marked *) or else the solution, as ASCII."""
        puzzle = self.grid(inputs).reshape(-1)
        panels = [("puzzle", self._panel(puzzle, np.zeros(puzzle.shape, bool)))]
        footer = ""
        if preds is not None:
            pred = self.grid(preds).reshape(-1)
            if labels is not None:
                wrong = pred != self.grid(labels).reshape(-1)
                footer = "solved" if not wrong.any() else f"{int(wrong.sum())} of {wrong.size} cells wrong"
            else:
                wrong = (puzzle != 0) & (pred != puzzle)  # without the answer, only changed givens are known wrong
                one = np.asarray(preds)[None]
                valid = self.score(np.asarray(inputs)[None], one, one)["valid"][0]
                footer = "a valid solution" if valid else "not a valid solution"
            panels.append(("prediction (* = wrong)", self._panel(pred, wrong)))
        elif labels is not None:
            solution = self.grid(labels).reshape(-1)
            panels.append(("solution", self._panel(solution, np.zeros(solution.shape, bool))))
        return side_by_side(panels, footer)

    def _panel(self, digits: np.ndarray, wrong: np.ndarray) -> list[str]:
        """One grid as text lines: 'd ' per cell ('d*' if wrong, '.' for blank), '|' between stacks, a rule between
        bands."""
        geo = geometry(self.size)
        n, bc = self.size, geo.box_cols
        cells = [("." if d == 0 else str(d)) + ("*" if w else " ") for d, w in zip(digits.tolist(), wrong.tolist())]
        rule = "+-".join("-" * (2 * bc) for _ in range(n // bc))
        lines = []
        for r in range(n):
            if r and r % geo.box_rows == 0:
                lines.append(rule)
            row = cells[r * n:(r + 1) * n]
            lines.append("| ".join("".join(row[s:s + bc]) for s in range(0, n, bc)))
        return lines
