"""Maze task: dihedral symmetries, generator guarantees (checked by an independent BFS), path checking on hand-made
mazes, CSV validation, and the determinism and layout of built splits."""

from __future__ import annotations

import csv
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import maze_text as text

from ponder import UserError
from ponder.config import MazeConfig
from ponder.tasks.grids import DIHEDRAL_INVERSE, dihedral
from ponder.tasks.maze import (CHARSET, GOAL, OPEN, PAD, PATH, START, WALL, MazeTask, check_paths, generate,
                               load_csv, shortest_paths, unique_path)

MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))


def tokens(rows: list[str]) -> np.ndarray:
    """A hand-drawn maze (rows of CHARSET characters) -> (N*N,) tokens."""
    return np.array([CHARSET.index(ch) + 1 for ch in "".join(rows)], np.uint8)


def bfs(open_mask: np.ndarray, source: tuple[int, int]) -> dict[tuple[int, int], int]:
    """Plain reference BFS: moves from `source` to every reachable open cell."""
    n = len(open_mask)
    dist, queue = {source: 0}, deque([source])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES:
            v = (r + dr, c + dc)
            if 0 <= v[0] < n and 0 <= v[1] < n and open_mask[v] and v not in dist:
                dist[v] = dist[(r, c)] + 1
                queue.append(v)
    return dist


def count_shortest(open_mask: np.ndarray, s: tuple[int, int], g: tuple[int, int]) -> int:
    """Exact number of shortest s -> g paths, by counting ways level by level."""
    dist = bfs(open_mask, s)
    ways = {s: 1}
    for cell in sorted(dist, key=dist.get)[1:]:
        ways[cell] = sum(ways[(cell[0] + dr, cell[1] + dc)] for dr, dc in MOVES
                         if dist.get((cell[0] + dr, cell[1] + dc)) == dist[cell] - 1)
    return ways.get(g, 0)


def edges(open_mask: np.ndarray) -> int:
    """Pairs of 4-adjacent open cells."""
    return int(np.sum(open_mask[1:] & open_mask[:-1]) + np.sum(open_mask[:, 1:] & open_mask[:, :-1]))


# A maze with one loop: the route along row 2 (10 moves) or round rows 3-4 (14 moves); unique shortest path.
LOOP = ["S    ",
        "#### ",
        "G    ",
        " ### ",
        "     "]
LOOP_ANSWER = ["Soooo",
               "####o",
               "Goooo",
               " ### ",
               "     "]
LOOP_DETOUR = ["Soooo",
               "####o",
               "G   o",
               "o###o",
               "ooooo"]


# ---------------------------------------------------------------------------------------------------------------------
# Dihedral symmetries


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.int8, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=6)), st.integers(0, 7))
def test_dihedral_inverse(grid: np.ndarray, t: int) -> None:
    if grid.shape[-1] != grid.shape[-2] and t in (1, 3, 6, 7):
        assert dihedral(grid, t).shape[-2:] == grid.shape[:-3:-1]  # non-square grids swap height and width
    assert np.array_equal(dihedral(dihedral(grid, t), DIHEDRAL_INVERSE[t]), grid)


def test_dihedral_matches_official_numbering() -> None:
    x = np.arange(12).reshape(3, 4)
    official = [x, np.rot90(x, 1), np.rot90(x, 2), np.rot90(x, 3), np.fliplr(x), np.flipud(x), x.T,
                np.fliplr(np.rot90(x, 1))]
    for t, want in enumerate(official):
        assert np.array_equal(dihedral(x, t), want)
        batch = np.stack([x, x + 100])
        assert np.array_equal(dihedral(batch, t)[1], want + 100)  # the last two axes of a batch
    assert len({dihedral(np.arange(9).reshape(3, 3), t).tobytes() for t in range(8)}) == 8
    with pytest.raises(ValueError):
        dihedral(x, 8)


# ---------------------------------------------------------------------------------------------------------------------
# Shortest paths and the generator


def test_shortest_paths_on_hand_made_mazes() -> None:
    loop = tokens(LOOP).reshape(5, 5) != WALL
    assert shortest_paths(loop, (0, 0), (2, 0)) == (10, 1)
    assert np.array_equal(unique_path(loop, (0, 0), (2, 0)), [0, 1, 2, 3, 4, 9, 14, 13, 12, 11, 10])
    # A symmetric ring: two shortest paths from corner to corner.
    ring = tokens(["S  ", " # ", "  G"]).reshape(3, 3) != WALL
    assert shortest_paths(ring, (0, 0), (2, 2)) == (4, 2)
    assert unique_path(ring, (0, 0), (2, 2)) is None
    cut = tokens(["S# ", "## ", "  G"]).reshape(3, 3) != WALL
    assert shortest_paths(cut, (0, 0), (2, 2)) == (-1, 0) and unique_path(cut, (0, 0), (2, 2)) is None


def test_generate_deterministic() -> None:
    a = generate(np.random.default_rng(5), 15, 20, 0.1)
    b = generate(np.random.default_rng(5), 15, 20, 0.1)
    c = generate(np.random.default_rng(6), 15, 20, 0.1)
    assert a[0].dtype == np.uint8 and a[0].shape == (225,)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert a[0].tobytes() != c[0].tobytes()


@pytest.mark.parametrize("size, min_path, loops, count", [(30, 110, 0.05, 8), (9, 20, 0.05, 20), (7, 10, 0.0, 20),
                                                          (8, 12, 0.3, 20), (16, 30, 0.1, 10)])
def test_generated_mazes_have_a_unique_long_shortest_path(size: int, min_path: int, loops: float, count: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(count):
        question, answer = generate(rng, size, min_path, loops)
        q, a = question.reshape(size, size), answer.reshape(size, size)
        assert set(np.unique(q)) <= {WALL, OPEN, START, GOAL} and np.sum(q == START) == 1 and np.sum(q == GOAL) == 1
        s, g = tuple(np.argwhere(q == START)[0]), tuple(np.argwhere(q == GOAL)[0])
        open_mask = q != WALL
        if size % 2 == 0:
            assert not open_mask[-1].any() and not open_mask[:, -1].any()  # even side: last row and column are wall
        from_s, from_g = bfs(open_mask, s), bfs(open_mask, g)
        length = from_s[g]
        assert length >= min_path and count_shortest(open_mask, s, g) == 1
        # The answer marks exactly the cells strictly between S and G on the shortest path, and changes nothing else.
        on_path = {c for c in from_s if c in from_g and from_s[c] + from_g[c] == length} - {s, g}
        assert {tuple(c) for c in np.argwhere(a == PATH)} == on_path and len(on_path) == length - 1
        assert np.array_equal(np.where(a == PATH, OPEN, a), q)
        # The open cells are connected (one maze, not islands).
        assert len(from_s) == int(open_mask.sum())


def test_loops_make_cycles_and_zero_loops_a_tree() -> None:
    rng = np.random.default_rng(0)
    for loops, more in ((0.0, 0), (0.2, 1)):
        for _ in range(5):
            question, answer = generate(rng, 21, 40, loops)
            open_mask = question.reshape(21, 21) != WALL
            extra = edges(open_mask) - (int(open_mask.sum()) - 1)  # independent cycles (connected graph)
            assert extra == 0 if more == 0 else extra >= more
            assert check_paths(question[None], answer[None], 21)[1].all()


def test_generate_rejects_impossible_min_path() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(UserError, match="data.maze.min_path"):
        generate(rng, 9, 100)  # more moves than a 9x9 has cells
    with pytest.raises(UserError, match="lower data.maze.min_path"):
        generate(rng, 5, 15, 1.0)  # possible on paper, never with unique shortest paths and every wall knocked down


# ---------------------------------------------------------------------------------------------------------------------
# Path checking


def test_check_paths_tells_answers_apart() -> None:
    q = tokens(LOOP)
    gap = tokens(LOOP_ANSWER)
    gap[2] = OPEN
    through_wall = tokens(LOOP)
    through_wall[5] = PATH  # S (0,0) -> wall (1,0) -> G (2,0)
    stray = tokens(LOOP_ANSWER)
    stray[22] = PATH
    moved_start = tokens(LOOP_ANSWER)
    moved_start[[0, 1]] = [OPEN, START]
    touching = tokens(["Soooo", "####o", "Gooo ", "o###o", "ooooo"])  # row 2 runs beside the detour's ends
    pad, out_of_range = tokens(LOOP_ANSWER), tokens(LOOP_ANSWER).astype(np.int64)
    pad[20], out_of_range[20] = PAD, 9
    cases = {"answer": (tokens(LOOP_ANSWER), True, True), "detour": (tokens(LOOP_DETOUR), True, False),
             "gap": (gap, False, False), "wall": (through_wall, False, False), "stray": (stray, False, False),
             "moved S": (moved_start, False, False), "touching": (touching, False, False), "pad": (pad, False, False),
             "out of range": (out_of_range, False, False), "question": (q, False, False)}
    preds = np.stack([p.astype(np.int64) for p, _, _ in cases.values()])
    valid, optimal = check_paths(np.repeat(q[None], len(cases), axis=0), preds, 5)
    for i, (name, (_, want_valid, want_optimal)) in enumerate(cases.items()):
        assert (valid[i], optimal[i]) == (want_valid, want_optimal), name
    assert valid.dtype == bool and optimal.dtype == bool
    assert check_paths(np.zeros((0, 25), np.uint8), np.zeros((0, 25), np.int64), 5)[0].shape == (0,)  # empty batch


def test_check_paths_stray_loop_and_adjacent_ends() -> None:
    # A 2x2 block of `o` away from the path: every `o` has two route neighbours, only the flood fill sees it.
    q = tokens(["S    #", "#### #", "G    #", "######", "##  ##", "##  ##"])
    answer = tokens(["Soooo#", "####o#", "Goooo#", "######", "##  ##", "##  ##"])
    loop = tokens(["Soooo#", "####o#", "Goooo#", "######", "##oo##", "##oo##"])
    valid, optimal = check_paths(np.stack([q, q]), np.stack([answer, loop]), 6)
    assert valid.tolist() == [True, False] and optimal.tolist() == [True, False]
    # S next to G: no `o` is the shortest path; a route round the side is valid but not optimal.
    q = tokens(["SG#", "  #", "###"])
    valid, optimal = check_paths(np.stack([q, q]), np.stack([q, tokens(["SG#", "oo#", "###"])]), 3)
    assert valid.tolist() == [True, True] and optimal.tolist() == [True, False]


def test_augmented_mazes_stay_solved() -> None:
    rng = np.random.default_rng(1)
    for size in (9, 12):
        question, answer = generate(rng, size, 12, 0.2)
        q, a = question.reshape(size, size), answer.reshape(size, size)
        moved_q = np.stack([dihedral(q, t) for t in range(8)]).reshape(8, -1)
        moved_a = np.stack([dihedral(a, t) for t in range(8)]).reshape(8, -1)
        valid, optimal = check_paths(moved_q, moved_a, size)
        assert valid.all() and optimal.all()
        task = MazeTask(MazeConfig(size=size))
        batch_q, batch_a = task.augment(np.random.default_rng(0), np.repeat(question[None], 32, 0),
                                        np.repeat(answer[None], 32, 0))
        assert batch_q.dtype == np.uint8 and batch_q.shape == (32, size * size)
        versions = {(mq.tobytes(), ma.tobytes()) for mq, ma in zip(moved_q, moved_a)}
        assert all((bq.tobytes(), ba.tobytes()) in versions for bq, ba in zip(batch_q, batch_a))
        assert len({bq.tobytes() for bq in batch_q}) > 1  # really random per example
        assert check_paths(batch_q, batch_a, size)[1].all()


# ---------------------------------------------------------------------------------------------------------------------
# CSV


def write_csv(path: Path, rows: list[list[str]], header: str = "source,question,answer,rating") -> Path:
    with open(path, "w", newline="") as f:
        f.write(header + "\n")
        csv.writer(f).writerows(rows)
    return path


@pytest.fixture(scope="module")
def mazes() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [generate(rng, 9, 16, 0.1) for _ in range(6)]


def test_load_csv_round_trip(tmp_path: Path, mazes) -> None:
    rows = [["gen", text(q), text(a), str(i)] for i, (q, a) in enumerate(mazes)]
    questions, answers, ratings = load_csv(write_csv(tmp_path / "m.csv", rows), 9)
    assert questions.dtype == np.uint8 and questions.shape == (6, 81)
    assert np.array_equal(questions, np.stack([q for q, _ in mazes]))
    assert np.array_equal(answers, np.stack([a for _, a in mazes]))
    assert ratings.tolist() == list(range(6))


def test_load_csv_keeps_edge_spaces(tmp_path: Path) -> None:
    q, a = " S#" + " " * 5 + "G", " S#" + "o" * 5 + "G"  # open cells first and last: never stripped
    questions, answers, _ = load_csv(write_csv(tmp_path / "e.csv", [["x", q, a, "0"]]), 3)
    assert text(questions[0]) == q and text(answers[0]) == a


@pytest.mark.parametrize("case, match", [
    ("columns", "expected 4 fields"), ("length", r"expected 81 \(size\*size for data.maze.size=9"),
    ("char", "'x' at position"), ("two S", "2 'S' cells"), ("no G", "0 'G' cells"), ("o in question", "path cell 'o'"),
    ("wall to path", "where the question has '#'"), ("moved G", "where the question has"),
    ("rating", "rating 'hard'")])
def test_load_csv_explains_bad_rows(tmp_path: Path, mazes, case: str, match: str) -> None:
    q, a = text(mazes[0][0]), text(mazes[0][1])
    wall = q.index("#")
    bad = {"columns": ["gen", q, a],
           "length": ["gen", q[:-1], a[:-1], "0"],
           "char": ["gen", q, a.replace("o", "x", 1), "0"],
           "two S": ["gen", q.replace(" ", "S", 1), a.replace(" ", "S", 1), "0"],
           "no G": ["gen", q.replace("G", " "), a.replace("G", " "), "0"],
           "o in question": ["gen", a, a, "0"],
           "wall to path": ["gen", q, a[:wall] + "o" + a[wall + 1:], "0"],
           "moved G": ["gen", q, a.replace("G", "o").replace(" ", "G", 1), "0"],
           "rating": ["gen", q, a, "hard"]}[case]
    good = ["gen", q, a, "1"]
    path = write_csv(tmp_path / "bad.csv", [good, good, bad, good])
    with pytest.raises(UserError, match=match) as err:
        load_csv(path, 9)
    assert str(err.value).startswith(f"{path}:4: ")  # header is line 1, the bad row line 4


def test_load_csv_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        load_csv(tmp_path / "missing.csv", 9)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty.csv:1: the header"):
        load_csv(tmp_path / "empty.csv", 9)
    with pytest.raises(UserError, match="no mazes after the header"):
        load_csv(write_csv(tmp_path / "header.csv", []), 9)


# ---------------------------------------------------------------------------------------------------------------------
# The task


SMALL = {"size": 9, "min_path": 16, "loops": 0.1, "train_size": 12, "test_size": 6}


def rows_of(arrays) -> set[bytes]:
    return {row.tobytes() for row in np.asarray(arrays.inputs)}


def test_build_generated_splits() -> None:
    task = MazeTask(MazeConfig(**SMALL))
    assert (task.metadata().seq_len, task.metadata().vocab_size) == (81, 6)
    train, test = task.build("train", 0), task.build("test", 0)
    assert train.num_examples == 12 and test.num_examples == 6 and not rows_of(train) & rows_of(test)
    assert check_paths(train.inputs, train.labels, 9)[1].all() and check_paths(test.inputs, test.labels, 9)[1].all()
    # A fresh task, test first: byte-identical splits (one stream, so building test never changes train).
    other = MazeTask(MazeConfig(**SMALL))
    test2, train2 = other.build("test", 0), other.build("train", 0)
    for a, b in ((train, train2), (test, test2)):
        assert a.inputs.tobytes() == b.inputs.tobytes() and a.labels.tobytes() == b.labels.tobytes()
    assert rows_of(MazeTask(MazeConfig(**SMALL)).build("train", 1)) != rows_of(train)
    with pytest.raises(UserError, match="split"):
        task.build("val", 0)


def test_build_aug_groups_of_eight() -> None:
    plain = MazeTask(MazeConfig(**SMALL)).build("train", 0)
    task = MazeTask(MazeConfig(**SMALL, aug=True))
    train, test = task.build("train", 0), task.build("test", 0)
    assert train.num_examples == 8 * 12 and train.num_groups == 12 and np.all(np.diff(train.group_indices) == 8)
    assert np.array_equal(train.inputs[::8], plain.inputs) and np.array_equal(train.labels[::8], plain.labels)
    assert test.num_examples == 6  # test is never augmented
    for g in range(3):
        versions = train.inputs[8 * g:8 * g + 8]
        assert len({v.tobytes() for v in versions}) == 8
        assert np.array_equal(versions[3].reshape(9, 9), np.rot90(versions[0].reshape(9, 9), 3))
    assert check_paths(train.inputs, train.labels, 9)[1].all()
    again = MazeTask(MazeConfig(**SMALL, aug=True)).build("train", 0)
    assert again.inputs.tobytes() == train.inputs.tobytes() and again.labels.tobytes() == train.labels.tobytes()


def test_build_from_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    mazes = [generate(rng, 7, 8) for _ in range(10)]
    path = write_csv(tmp_path / "m.csv", [["gen", text(q), text(a), "0"] for q, a in mazes])
    cfg = MazeConfig(size=7, csv=str(path), train_size=6, test_size=3)
    train, test = MazeTask(cfg).build("train", 0), MazeTask(cfg).build("test", 0)
    assert train.num_examples == 6 and test.num_examples == 3 and not rows_of(train) & rows_of(test)
    assert rows_of(train) | rows_of(test) <= {q.tobytes() for q, _ in mazes}
    assert MazeTask(cfg).build("train", 0).inputs.tobytes() == train.inputs.tobytes()
    held = MazeTask(MazeConfig(size=7, csv=str(path), test_csv=str(path), train_size=6, test_size=10)).build("test", 0)
    assert held.num_examples == 10
    with pytest.raises(UserError, match="fewer than data.maze.train_size"):
        MazeTask(MazeConfig(size=7, csv=str(path), train_size=11)).build("train", 0)
    with pytest.raises(UserError, match="49 characters, expected 81"):
        MazeTask(MazeConfig(size=9, csv=str(path))).build("train", 0)


def test_score_and_render() -> None:
    task = MazeTask(MazeConfig(size=5))
    q, answer, detour = tokens(LOOP), tokens(LOOP_ANSWER), tokens(LOOP_DETOUR)
    scores = task.score(np.stack([q, q]), np.stack([answer, detour]), np.stack([answer, answer]))
    assert scores["path_valid"].dtype == np.float32 and scores["path_valid"].tolist() == [1.0, 1.0]
    assert scores["path_optimal"].tolist() == [1.0, 0.0]
    assert np.array_equal(task.grid(answer), answer.reshape(5, 5)) and len(task.palette) == 6

    solved = task.render(q, answer, answer)
    assert "S" in solved and "G" in solved and solved.splitlines()[-1] == "solved"
    assert "|Soooo|" in solved
    wrong = task.render(q, detour, answer)
    assert wrong.splitlines()[-1] == "10 of 25 cells wrong; a valid path of length 14, shortest is 10"
    assert wrong.splitlines()[4].endswith("|G***o|")  # row 2 of the prediction: the missed path cells
    assert task.render(q, detour).splitlines()[-1] == "a valid path of length 14, shortest is 10"
    broken = task.render(q, np.full(25, 9, np.int64))
    assert broken.splitlines()[-1] == "not a valid path" and "*****" in broken
    assert task.render(q, labels=answer).splitlines()[0].split() == ["maze", "solution"]
