"""Maze: shortest paths, a seeded maze generator, the CSV loader, path checking and the `MazeTask`.

Design choices:
- Cells and tokens are those of HRM/TRM Maze-Hard (`dataset/build_maze_dataset.py`): the characters of
  CHARSET = "# SGo" (wall, open, start, goal, path) are tokens 1..5, PAD 0; vocab 6, a maze of side N is N*N tokens,
  row-major. The question holds walls, open cells, one S and one G; the answer is the question with every cell
  strictly between S and G on the shortest path turned into `o`. Moves go to the 4 neighbours; the grid's edge is a
  wall. The path length is the number of moves from S to G (= `o` cells + 1).
- The generator carves a perfect maze (a spanning tree) with a randomised depth-first backtracker on a lattice of
  cells at even coordinates 0, 2, 4, .., with walls between them. For even N the last row and column hold no lattice
  cell and stay wall (a 30x30 maze is a 29x29 one inside a wall on two sides). It then knocks down a `loops` fraction
  of the walls still separating two lattice cells, which adds cycles: a maze with loops has several routes between
  many pairs of cells, so "the shortest path is unique" is a real constraint, as in the official data.
- S is drawn uniformly among the open cells; one BFS from S counts the shortest paths to every cell (capped at 2), and
  G is drawn uniformly among the cells at least `min_path` moves away with exactly one shortest path. A start with
  no such goal is redrawn a few times, then the maze is; bounded tries end in a UserError that names the option to
  lower. BFS is plain Python over at most 64*64 cells: the work is a few thousand dependent steps, where numpy's
  per-call overhead dominates (as in the Sudoku solver).
- A predicted path is *valid* if it keeps the question's walls, S and G, marks only open cells, and its `o` cells
  are one simple route from S to G that never touches itself (each `o` has exactly two neighbours among `o`, S, G):
  the cells then spell out one route unambiguously. It is *optimal* if valid and as short as a BFS shortest path.
  `check_paths` does this on whole batches with array operations (flood fills), since evaluation calls it per batch.
- The CSV loader validates every row with vectorised checks, then explains the first bad one in words
  (`UserError("path:line: what is wrong")`), as the Sudoku loader does. Question and answer fields are never
  stripped: a leading or trailing space is an open cell.
- Splits are deterministic in (options, seed): CSV rows come from a seeded permutation; generated mazes come from one
  seeded stream, deduplicated, train first and test after. `aug` stores the 8 dihedral versions of each train maze
  as one group (identity first); a symmetry of the square maps a maze and its unique shortest path to a maze and its
  unique shortest path, so augmented examples stay correct.
"""

from __future__ import annotations

import re

import functools
from pathlib import Path

import numpy as np

from ponder import UserError
from ponder.config import MazeConfig
from ponder.tasks.base import Task
from ponder.tasks.dataset import Metadata, PuzzleArrays, from_pairs
from ponder.tasks.grids import dihedral, side_by_side
from ponder.tasks.splits import CsvPairs, GeneratedPairs, bad_rating, check_rows, rating_ok, read_pair_csv

CHARSET = "# SGo"  # official character set; character i is token i + 1
PAD, WALL, OPEN, START, GOAL, PATH = range(6)  # tokens
VOCAB = len(CHARSET) + 1

# ---------------------------------------------------------------------------------------------------------------------
# Shortest paths


@functools.cache
def _neighbours(size: int) -> tuple[tuple[int, ...], ...]:
    """Per cell of a size x size grid (row-major index), its 4 neighbours inside the grid."""
    out = []
    for c in range(size * size):
        r, k = divmod(c, size)
        out.append(tuple(v for v, inside in ((c - size, r > 0), (c + size, r < size - 1),
                                             (c - 1, k > 0), (c + 1, k < size - 1)) if inside))
    return tuple(out)


def _bfs(passable: list[bool], size: int, source: int) -> tuple[list[int], list[int]]:
    """Moves from `source` to every cell (-1 = unreachable) and the number of shortest paths there, capped at 2.
    Cells leave the queue in order of distance, so a cell's count is final before any cell one step further reads it."""
    neighbours = _neighbours(size)
    dist, count = [-1] * (size * size), [0] * (size * size)
    dist[source], count[source] = 0, 1
    queue = [source]
    for u in queue:  # the list grows while it is walked: a FIFO queue without pops
        d, k = dist[u] + 1, count[u]
        for v in neighbours[u]:
            if not passable[v]:
                continue
            if dist[v] < 0:
                dist[v], count[v] = d, k
                queue.append(v)
            elif dist[v] == d:
                count[v] = min(2, count[v] + k)
    return dist, count


def _flat_ends(open_mask: np.ndarray, start: tuple[int, int],
               goal: tuple[int, int]) -> tuple[list[bool], int, int, int]:
    """(passable cells as a flat list, N, flat start, flat goal)."""
    open_mask = np.asarray(open_mask, dtype=bool)
    n = open_mask.shape[0]
    assert open_mask.shape == (n, n), f"open_mask must be a square (N, N) array, got {open_mask.shape}"
    return open_mask.reshape(-1).tolist(), n, start[0] * n + start[1], goal[0] * n + goal[1]


def shortest_paths(open_mask: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> tuple[int, int]:
    """(moves on a shortest start -> goal path or -1 if there is none, number of shortest paths capped at 2).
    `open_mask` (N, N) bool marks passable cells (start and goal included); positions are (row, column)."""
    passable, n, s, g = _flat_ends(open_mask, start, goal)
    if not (passable[s] and passable[g]):
        return -1, 0
    dist, count = _bfs(passable, n, s)
    return dist[g], count[g]


def unique_path(open_mask: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> np.ndarray | None:
    """The cells of the shortest start -> goal path, both ends included, as row-major indices in order; None if
    goal is unreachable or the shortest path is not unique. BFS from both ends: a cell lies on some shortest path
    iff its two distances add up to the length L, and the path is unique iff each distance 0..L has one such cell."""
    passable, n, s, g = _flat_ends(open_mask, start, goal)
    if not (passable[s] and passable[g]):
        return None
    from_s = np.array(_bfs(passable, n, s)[0])
    length = int(from_s[g])
    if length < 0:
        return None
    from_g = np.array(_bfs(passable, n, g)[0])
    on = np.flatnonzero((from_s >= 0) & (from_g >= 0) & (from_s + from_g == length))
    if len(on) != length + 1:
        return None  # some distance has two cells on shortest paths: two paths at least
    return on[np.argsort(from_s[on])]


# ---------------------------------------------------------------------------------------------------------------------
# Generator

STARTS_PER_MAZE = 8  # start cells tried in one maze before carving another
MAX_MAZES = 200  # mazes carved before generate() gives up on an unreachable min_path


def _carve(rng: np.random.Generator, size: int) -> np.ndarray:
    """A perfect maze: (size, size) bool, True = open. Lattice cells at even coordinates, joined by a randomised
    depth-first backtracker, whose long winding corridors give long shortest paths."""
    m = (size + 1) // 2  # lattice cells per side; for even size the last row and column stay wall
    open_mask = np.zeros((size, size), bool)
    open_mask[0:2 * m:2, 0:2 * m:2] = True
    lattice = _neighbours(m)
    visited = [False] * (m * m)
    draws = rng.random(m * m).tolist()  # one draw per carved passage (m*m - 1 of them), drawn at once for speed
    first = int(rng.integers(m * m))
    visited[first] = True
    stack, step = [first], 0
    while stack:
        c = stack[-1]
        options = [v for v in lattice[c] if not visited[v]]
        if not options:
            stack.pop()
            continue
        v = options[int(draws[step] * len(options))]
        step += 1
        visited[v] = True
        (r1, k1), (r2, k2) = divmod(c, m), divmod(v, m)
        open_mask[r1 + r2, k1 + k2] = True  # the wall between lattice cells (2 r1, 2 k1) and (2 r2, 2 k2)
        stack.append(v)
    return open_mask


def _add_loops(rng: np.random.Generator, open_mask: np.ndarray, loops: float) -> None:
    """Knock down a `loops` fraction of the walls that still separate two lattice cells, in place."""
    m = (open_mask.shape[0] + 1) // 2
    rows, cols = np.meshgrid(np.arange(2 * m - 1), np.arange(2 * m - 1), indexing="ij")
    between = (rows + cols) % 2 == 1  # one coordinate odd, the other even: a wall between two lattice cells
    walls = np.flatnonzero(between & ~open_mask[:2 * m - 1, :2 * m - 1])
    knock = rng.choice(len(walls), round(loops * len(walls)), replace=False)
    open_mask[rows.flat[walls[knock]], cols.flat[walls[knock]]] = True


def generate(rng: np.random.Generator, size: int, min_path: int, loops: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A random maze whose shortest S -> G path is unique and at least `min_path` moves long -> (question, answer),
    each (size*size,) uint8 tokens. Same generator state -> same maze."""
    m = (size + 1) // 2
    most = m * m + 2 * m * (m - 1) - 1  # open cells of the lattice with every wall knocked down, minus one
    if not 1 <= min_path <= most:
        raise UserError(f"data.maze.min_path={min_path} is impossible in a {size}x{size} maze (at most {most} moves "
                        f"even without walls); lower data.maze.min_path")
    for _ in range(MAX_MAZES):
        open_mask = _carve(rng, size)
        _add_loops(rng, open_mask, loops)
        passable = open_mask.reshape(-1).tolist()
        cells = np.flatnonzero(open_mask)
        for _ in range(STARTS_PER_MAZE):
            s = int(cells[rng.integers(len(cells))])
            dist, count = (np.array(a) for a in _bfs(passable, size, s))
            goals = np.flatnonzero((dist >= min_path) & (count == 1))
            if len(goals) == 0:
                continue
            g = int(goals[rng.integers(len(goals))])
            path = unique_path(open_mask, divmod(s, size), divmod(g, size))
            assert path is not None and len(path) == dist[g] + 1, "BFS path count and two-ended BFS disagree"
            question = np.where(open_mask, OPEN, WALL).astype(np.uint8).reshape(-1)
            question[s], question[g] = START, GOAL
            answer = question.copy()
            answer[path[1:-1]] = PATH
            return question, answer
    raise UserError(f"no {size}x{size} maze with a unique shortest path of >= {min_path} moves in {MAX_MAZES} mazes "
                    f"({STARTS_PER_MAZE} starts each, loops={loops}); lower data.maze.min_path (with loops=0.05 a "
                    f"30x30 maze supports 110 to 130, a 9x9 one up to about 32) or data.maze.loops")


# ---------------------------------------------------------------------------------------------------------------------
# CSV

_TOKENS = np.full(256, 255, np.uint8)  # ASCII byte -> token, 255 = not in CHARSET
_TOKENS[[ord(ch) for ch in CHARSET]] = np.arange(1, len(CHARSET) + 1)
_ALLOWED = ", ".join(repr(ch) for ch in CHARSET)


def _explain(question: str, answer: str, rating: str, size: int) -> str:
    """Why one CSV row is bad, in words (the vectorised checks only say *that* it is)."""
    cells = size * size
    for name, text in (("question", question), ("answer", answer)):
        if len(text) != cells:
            return (f"{name} has {len(text)} characters, expected {cells} (size*size for data.maze.size={size}, "
                    f"row-major)")
    for name, text in (("question", question), ("answer", answer)):
        for i, ch in enumerate(text):
            if not ch.isascii() or _TOKENS[ord(ch)] == 255:
                return f"{name} has {ch!r} at position {i + 1}, expected one of {_ALLOWED}"
    for ch, what in (("S", "start"), ("G", "goal")):
        if question.count(ch) != 1:
            return f"question has {question.count(ch)} {ch!r} cells, expected exactly one {what}"
    if "o" in question:
        i = question.index("o")
        return f"question has a path cell 'o' at row {i // size + 1}, column {i % size + 1}; questions hold no path"
    for i, (q, a) in enumerate(zip(question, answer)):
        if q != a and not (q == " " and a == "o"):
            return (f"answer has {a!r} at row {i // size + 1}, column {i % size + 1} where the question has {q!r} "
                    f"(an answer is its question with some open cells ' ' turned into path cells 'o')")
    return bad_rating(rating)


def load_csv(path: str | Path, size: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A maze CSV (header naming `question` and `answer`, optionally `rating`, e.g. source,question,answer,rating) ->
    (questions (M, N*N) uint8 tokens, answers (M, N*N) uint8 tokens, ratings (M,) int64; 0 without a rating column).

    Every row is checked (field count, length, characters, one S and one G, no path in the question, the answer only
    adding path cells on open cells, an integer rating); the first bad one raises `UserError("path:line: ...")`,
    lines counted from 1 = header.
    """
    path = Path(path)
    cells = size * size
    questions, answers, ratings, lines, field_error = read_pair_csv(path, "maze", strip=False)  # spaces are open cells

    # Vectorised checks over all rows; rows of the wrong length get a stand-in so the rest stays rectangular.
    right_length = np.array([len(q) == cells and len(a) == cells for q, a in zip(questions, answers)], dtype=bool)
    q_text = "".join(q if ok else "#" * cells for q, ok in zip(questions, right_length))
    a_text = "".join(a if ok else "#" * cells for a, ok in zip(answers, right_length))
    # Non-ASCII characters become '?' (one byte each, so positions hold) and fail the character check.
    q = _TOKENS[np.frombuffer(q_text.encode("ascii", "replace"), np.uint8)].reshape(-1, cells)
    a = _TOKENS[np.frombuffer(a_text.encode("ascii", "replace"), np.uint8)].reshape(-1, cells)
    good_chars = np.all(q != 255, axis=1) & np.all(a != 255, axis=1)
    ends = (np.sum(q == START, axis=1) == 1) & (np.sum(q == GOAL, axis=1) == 1) & ~np.any(q == PATH, axis=1)
    adds_path = np.all((a == q) | ((q == OPEN) & (a == PATH)), axis=1)
    good_rating = np.array([rating_ok(r) for r in ratings], dtype=bool)
    good = right_length & good_chars & ends & adds_path & good_rating
    check_rows(path, good, lines, lambda i: _explain(questions[i], answers[i], ratings[i], size), field_error,
               "mazes")
    return q, a, np.array([int(r) for r in ratings], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------------------
# Path checking


def _neighbour_count(mask: np.ndarray) -> np.ndarray:
    """(B, N, N) bool -> (B, N, N) int8: how many of each cell's 4 neighbours are set."""
    m = mask.astype(np.int8)
    out = np.zeros_like(m)
    out[:, 1:] += m[:, :-1]
    out[:, :-1] += m[:, 1:]
    out[:, :, 1:] += m[:, :, :-1]
    out[:, :, :-1] += m[:, :, 1:]
    return out


def _pack(mask: np.ndarray) -> np.ndarray:
    """(B, N, N) bool -> (B, N) uint64, bit k of [b, r] = mask[b, r, k]. N <= 64 (MazeConfig), so a grid row is one
    machine word and a flood step is a few shifts on B*N words instead of B*N*N booleans (about 20x faster)."""
    n = mask.shape[-1]
    assert n <= 64, f"packed rows hold at most 64 cells, got {n}"
    return (mask.astype(np.uint64) << np.arange(n, dtype=np.uint64)).sum(axis=-1, dtype=np.uint64)


def _flood(seed: np.ndarray, allowed: np.ndarray, goal: np.ndarray,
           stop_at_goal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Grow `seed` (B, N) packed rows one 4-neighbour step at a time inside `allowed` until nothing changes (or, with
    `stop_at_goal`, until it reaches the cell `goal` (B, 2) = (row, column)) -> (packed cells reached (B, N), steps
    to reach the goal (B,), -1 if never). Finished rows drop out, so a batch costs about its longest flood."""
    one = np.uint64(1)
    out = seed & allowed
    steps = np.full(len(seed), -1)
    rows, cur, inside = np.arange(len(seed)), out.copy(), allowed
    level = 0
    while len(rows):
        hit = (cur[np.arange(len(rows)), goal[rows, 0]] >> goal[rows, 1].astype(np.uint64)) & one == one
        steps[rows] = np.where(hit & (steps[rows] < 0), level, steps[rows])
        grown = cur | (cur << one) | (cur >> one)  # left and right neighbours; bits shifted out of a row are lost
        grown[:, 1:] |= cur[:, :-1]
        grown[:, :-1] |= cur[:, 1:]
        grown &= inside
        going = np.any(grown != cur, axis=1)
        if stop_at_goal:
            going &= ~hit
        out[rows] = grown
        if not going.all():
            rows, grown, inside = rows[going], grown[going], inside[going]
        cur = grown
        level += 1
    return out, steps


def check_paths(questions: np.ndarray, preds: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, N*N) question and predicted tokens -> (valid (B,) bool, optimal (B,) bool), as defined in the module
    docstring. PAD or out-of-range predicted tokens make an example invalid; nothing here raises on bad predictions."""
    q = np.asarray(questions).astype(np.int64)
    p = np.asarray(preds).astype(np.int64)
    assert q.ndim == 2 and q.shape == p.shape and q.shape[1] == size * size, \
        f"expected questions and preds of shape (B, {size * size}), got {q.shape} and {p.shape}"
    q, p = q.reshape(-1, size, size), p.reshape(-1, size, size)
    start, goal, path = q == START, q == GOAL, p == PATH
    axes = (1, 2)
    well_posed = (start.sum(axes) == 1) & (goal.sum(axes) == 1)
    keeps = np.all(np.where(q == OPEN, (p == OPEN) | (p == PATH), p == q), axis=axes) & np.all(p != PAD, axis=axes)
    on_path = _neighbour_count(path)
    ends = (np.sum(start * on_path, axis=axes) == 1) & (np.sum(goal * on_path, axis=axes) == 1)
    touching = np.any(start & (_neighbour_count(goal) > 0), axis=axes)
    ends |= ~path.any(axes) & touching  # S next to G: a path of one move, no `o` at all
    route = path | start | goal
    body = np.all(~path | (_neighbour_count(route) == 2), axis=axes)
    valid = well_posed & keeps & ends & body
    # With those degrees the walk from S through `o` cells ends at G; any other `o` cells form separate loops, which
    # a flood fill from S along the route does not reach.
    goal_cell = np.stack(np.divmod(np.argmax(goal.reshape(len(q), size * size), axis=1), size), axis=1)  # (B, 2)
    rows = np.flatnonzero(valid)
    packed_route = _pack(route[rows])
    reached, _ = _flood(_pack(start[rows]), packed_route, goal_cell[rows], stop_at_goal=False)
    valid[rows] = np.all(reached == packed_route, axis=1)
    rows = np.flatnonzero(valid)
    # Walls are the only impassable cells of a well-formed question.
    _, shortest = _flood(_pack(start[rows]), _pack(q[rows] >= OPEN), goal_cell[rows], stop_at_goal=True)
    optimal = np.zeros_like(valid)
    optimal[rows] = path[rows].sum(axes) + 1 == shortest
    return valid, optimal


# ---------------------------------------------------------------------------------------------------------------------
# The task

_SHOWN = np.array(list("." + CHARSET + "?"))  # token -> character in text pictures; '?' = out of range


class MazeTask(Task):
    """Maze-Hard style path finding: N*N maze tokens in, the same maze with its shortest path marked out."""

    name = "maze"
    config = MazeConfig
    summary = "generated N x N mazes with a unique shortest path (Maze-Hard: 30x30, >= 110) or the CSV"
    # Colours per display value (= token): pad, wall, open, start, goal, path.
    palette = ("#ffffff", "#3b3b3b", "#f4f4f4", "#2ca02c", "#d62728", "#4c8ed9")  # pad, wall, open, S, G, path

    def __init__(self, cfg: MazeConfig) -> None:
        self.cfg = cfg
        self.size = cfg.size
        self._csv = CsvPairs(lambda path: load_csv(path, self.size)[:2], "mazes", "data.maze")
        self._generator = GeneratedPairs(lambda rng: generate(rng, self.size, cfg.min_path, cfg.loops),
                                         f"{self.size}x{self.size} mazes", "data.maze")

    def metadata(self) -> Metadata:
        return Metadata(seq_len=self.size * self.size, vocab_size=VOCAB)

    # -- building

    def build(self, split: str, seed: int) -> PuzzleArrays:
        if split not in ("train", "test"):
            raise UserError(f"unknown split {split!r}; expected 'train' or 'test'")
        cfg = self.cfg
        if cfg.csv or (split == "test" and cfg.test_csv):  # generated train mazes may be tested on the public set
            questions, answers = self._csv.split(split, seed, cfg.csv, cfg.test_csv, cfg.train_size, cfg.test_size)
        else:
            questions, answers = self._generator.split(split, seed, cfg.train_size, cfg.test_size)
        if split == "test" or not self.cfg.aug:
            return from_pairs(questions, answers)
        # Train with aug: each maze's 8 dihedral versions, identity first, as one group (official --aug).
        n, count = self.size, len(questions)
        q, a = questions.reshape(count, n, n), answers.reshape(count, n, n)
        out_q = np.stack([dihedral(q, t) for t in range(8)], axis=1).reshape(count * 8, n * n)
        out_a = np.stack([dihedral(a, t) for t in range(8)], axis=1).reshape(count * 8, n * n)
        return from_pairs(out_q, out_a, np.repeat(np.arange(count), 8))

    # -- training and evaluation helpers

    def augment(self, rng: np.random.Generator, inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """On-the-fly augmentation of token batches (B, N*N): one random dihedral symmetry per example, the same for
        its input and label."""
        n = self.size
        assert inputs.ndim == 2 and inputs.shape == labels.shape and inputs.shape[1] == n * n, \
            f"expected inputs and labels of shape (B, {n * n}), got {inputs.shape} and {labels.shape}"
        b = len(inputs)
        t = rng.integers(8, size=b)
        q, a = inputs.reshape(b, n, n), labels.reshape(b, n, n)
        out_q, out_a = np.empty_like(q), np.empty_like(a)
        for k in range(8):
            rows = t == k
            out_q[rows], out_a[rows] = dihedral(q[rows], k), dihedral(a[rows], k)
        return out_q.reshape(b, n * n), out_a.reshape(b, n * n)

    def score(self, inputs: np.ndarray, preds: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """path_valid: the prediction marks one clean S -> G route through open cells; path_optimal: a shortest one.
        The built mazes have a unique shortest path, so path_optimal equals exact match on them."""
        valid, optimal = check_paths(inputs, preds, self.size)
        return {"path_valid": valid.astype(np.float32), "path_optimal": optimal.astype(np.float32)}

    def parse(self, text: str, **options) -> np.ndarray:
        """A maze as text: N lines of N characters, '#' wall, ' ' open, 'S' start, 'G' goal (the official
        characters); a title and a frame as `render` draws them (+--+ lines, | at both ends) are skipped; a line shorter than N is
        taken to end in open cells (editors drop trailing spaces)."""
        n = self.size
        lines = []
        for line in text.splitlines():
            if not line.strip() or set(line.strip()) <= set("+-"):  # blank, or a frame's top or bottom
                continue
            if any(set(word) != {"o"} for word in re.findall(r"[a-z]{2,}", line)):  # a title ("maze", as render writes)
                continue
            framed = line.rstrip()
            lines.append(framed[1:-1] if len(framed) >= 2 and framed[0] == framed[-1] == "|" else line)
        if len(lines) != n or any(len(line) > n for line in lines):
            longest = max((len(line) for line in lines), default=0)
            raise UserError(f"this model solves {n}x{n} mazes: {n} lines of {n} characters, got {len(lines)} lines "
                            f"of up to {longest}")
        rows = [line.ljust(n) for line in lines]
        for r, row in enumerate(rows):
            for c, ch in enumerate(row):
                if ch not in "# SG":
                    raise UserError(f"row {r + 1}, column {c + 1} is {ch!r}; a maze holds '#' (wall), ' ' (open), "
                                    f"'S' and 'G'")
        flat = "".join(rows)
        for ch, what in (("S", "start"), ("G", "goal")):
            if flat.count(ch) != 1:
                raise UserError(f"the maze has {flat.count(ch)} {ch!r} cells; it needs exactly one {what}")
        return _TOKENS[np.frombuffer(flat.encode(), np.uint8)]

    def grid(self, tokens: np.ndarray) -> np.ndarray:
        """(N*N,) tokens -> (N, N) display values, which are the tokens (0 pad, 1 wall, .., 5 path)."""
        return np.asarray(tokens).astype(np.int64).reshape(self.size, self.size)

    def render(self, inputs: np.ndarray, preds: np.ndarray | None = None, labels: np.ndarray | None = None) -> str:
        """The maze, and beside it the prediction (wrong cells drawn as '*') or else the solution, as ASCII in the
        CHARSET characters ('.' = pad, '?' = a token outside the vocabulary), each inside a frame."""
        maze = self.grid(inputs).reshape(-1)
        panels = [("maze", self._panel(maze, np.zeros(maze.shape, bool)))]
        footer = ""
        if preds is not None:
            pred = self.grid(preds).reshape(-1)
            if labels is not None:
                wrong = pred != self.grid(labels).reshape(-1)
            else:
                # Without the answer, only cells that had to stay as they were are known wrong.
                wrong = ((maze != OPEN) & (pred != maze)) | (pred < WALL) | (pred > PATH)
            footer = self._verdict(maze, pred)
            if labels is not None:
                footer = "solved" if not wrong.any() else f"{int(wrong.sum())} of {wrong.size} cells wrong; {footer}"
            panels.append(("prediction (* = wrong)", self._panel(pred, wrong)))
        elif labels is not None:
            solution = self.grid(labels).reshape(-1)
            panels.append(("solution", self._panel(solution, np.zeros(solution.shape, bool))))
        return side_by_side(panels, footer)

    def _verdict(self, maze: np.ndarray, pred: np.ndarray) -> str:
        valid, _ = check_paths(maze[None], pred[None], self.size)
        if not valid[0]:
            return "not a valid path"
        grid = maze.reshape(self.size, self.size)
        start, goal = (tuple(np.argwhere(grid == t)[0]) for t in (START, GOAL))
        shortest, _ = shortest_paths(grid != WALL, start, goal)
        return f"a valid path of length {int(np.sum(pred == PATH)) + 1}, shortest is {shortest}"

    def _panel(self, tokens: np.ndarray, wrong: np.ndarray) -> list[str]:
        """One maze as text lines inside a +--+ frame (the frame shows where open edge cells end)."""
        n = self.size
        chars = _SHOWN[np.where((tokens >= 0) & (tokens < VOCAB), tokens, VOCAB)]
        chars[wrong] = "*"
        rule = "+" + "-" * n + "+"
        return [rule] + ["|" + "".join(chars[r * n:(r + 1) * n]) + "|" for r in range(n)] + [rule]
