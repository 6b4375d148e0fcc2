"""Sudoku task: solver against published answers, generator guarantees, augmentation invariants, CSV validation,
and the determinism and layout of built splits."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder import UserError
from ponder.config import DataConfig, SudokuConfig
from ponder.tasks import build_dataset
from ponder.tasks.sudoku import (SudokuTask, augment_grids, generate, geometry, grid_classes, is_unique,
                                 is_valid_solution, load_csv, solve, valid_solutions)
from ponder.tasks.sudoku import random_transforms, singles_fill

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sudoku"
SIZES = (4, 6, 9)


def data_file(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not available (the shared data folder sits beside the repository)")
    return path


@pytest.fixture(scope="module")
def generated() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """A few minimal puzzles per size: (puzzles (k, n*n), solutions (k, n*n))."""
    out = {}
    for size, count in ((4, 8), (6, 8), (9, 3)):
        rng = np.random.default_rng(123)
        pairs = [generate(rng, size)[:2] for _ in range(count)]
        out[size] = (np.stack([p for p, _ in pairs]), np.stack([s for _, s in pairs]))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Geometry and solver


@pytest.mark.parametrize("size, peers", [(4, 7), (6, 12), (9, 20)])
def test_geometry(size: int, peers: int) -> None:
    geo = geometry(size)
    assert len(geo.units) == 3 * size and all(len(u) == size for u in geo.units)
    # Every cell lies in exactly one row, one column and one box.
    assert np.array_equal(np.bincount([c for u in geo.units for c in u]), np.full(size * size, 3))
    assert all(len(p) == peers for p in geo.peers)
    with pytest.raises(UserError, match="size"):
        geometry(5)


def test_solver_matches_published_answers() -> None:
    for name, rows in (("magictour-top1465.csv", 25), ("tdoku-17clue.csv", 10), ("tdoku-hard.csv", 10)):
        questions, answers, _ = load_csv(data_file(name))
        for i in np.random.default_rng(0).choice(len(questions), rows, replace=False):
            result = solve(questions[i], 9)
            assert len(result.solutions) == 1, f"{name} row {i} should be unique"
            assert np.array_equal(result.solutions[0], answers[i])
            assert result.guesses >= 0


def test_solver_finds_multiple_solutions() -> None:
    for size in SIZES:
        empty = np.zeros(size * size, np.uint8)
        result = solve(empty, size, limit=3)
        assert len(result.solutions) == 3 and not is_unique(empty, size)
        assert all(is_valid_solution(s, size) for s in result.solutions)
        assert len({s.tobytes() for s in result.solutions}) == 3
    # A 17-clue puzzle is minimal: without any one clue it has several solutions.
    questions, answers, _ = load_csv(data_file("tdoku-17clue.csv"))
    puzzle = questions[0].copy()
    puzzle[np.flatnonzero(puzzle)[0]] = 0
    result = solve(puzzle, 9)
    assert len(result.solutions) == 2 and result.guesses > 0
    assert all(is_valid_solution(s, 9) and np.all((puzzle == 0) | (s == puzzle)) for s in result.solutions)


def test_solver_detects_unsolvable() -> None:
    clash = np.zeros(16, np.uint8)
    clash[[0, 1]] = 1  # two 1s in a row
    assert solve(clash, 4).solutions == []
    # No repeated given, yet cell (0, 2) has no candidate: 1 and 2 in its row, 3 and 4 in its column.
    dead = np.zeros(16, np.uint8)
    dead[[0, 1, 10, 14]] = [1, 2, 3, 4]
    assert solve(dead, 4).solutions == [] and not is_unique(dead, 4)


def test_is_valid_solution(generated) -> None:
    for size in SIZES:
        solution = generated[size][1][0]
        assert is_valid_solution(solution, size)
        swapped = solution.copy()
        swapped[[0, 1]] = swapped[[1, 0]]  # rows still hold every digit, columns no longer do
        assert not is_valid_solution(swapped, size)
        blanked = solution.copy()
        blanked[5] = 0
        assert not is_valid_solution(blanked, size)
        assert not is_valid_solution(solution[:-1], size)


# ---------------------------------------------------------------------------------------------------------------------
# Generator


@pytest.mark.parametrize("size", SIZES)
def test_generate_deterministic_unique_minimal(size: int) -> None:
    a = generate(np.random.default_rng(7), size)
    b = generate(np.random.default_rng(7), size)
    c = generate(np.random.default_rng(8), size)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])
    puzzle, solution, rating = a
    assert puzzle.dtype == np.uint8 and puzzle.shape == (size * size,)
    assert is_valid_solution(solution, size) and np.all((puzzle == 0) | (puzzle == solution))
    result = solve(puzzle, size)
    assert len(result.solutions) == 1 and np.array_equal(result.solutions[0], solution) and result.guesses == rating
    # Minimal: every remaining given is needed for uniqueness.
    for cell in np.flatnonzero(puzzle):
        fewer = puzzle.copy()
        fewer[cell] = 0
        assert not is_unique(fewer, size)


@pytest.mark.parametrize("size, lo, hi", [(4, 3, 7), (6, 10, 20), (9, 30, 45), (6, 15, 15)])
def test_generate_blank_bounds(size: int, lo: int, hi: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(10 if size < 9 else 3):
        puzzle, solution, _ = generate(rng, size, min_blanks=lo, max_blanks=hi)
        assert lo <= np.count_nonzero(puzzle == 0) <= hi
        assert is_unique(puzzle, size) and np.all((puzzle == 0) | (puzzle == solution))


def test_generate_min_rating_and_bad_options() -> None:
    rng = np.random.default_rng(0)
    for _ in range(3):
        puzzle, _, rating = generate(rng, 6, min_rating=1)
        assert rating >= 1 and solve(puzzle, 6).guesses == rating
    with pytest.raises(UserError, match="min_blanks"):
        generate(rng, 9, min_blanks=70)  # no 9x9 puzzle with 11 givens is unique
    with pytest.raises(UserError, match="max_blanks"):
        generate(rng, 4, max_blanks=17)


# ---------------------------------------------------------------------------------------------------------------------
# Augmentation


def _box_counts(grids: np.ndarray, size: int) -> np.ndarray:
    """(B, n*n) -> (B, n) sorted counts of givens per box."""
    geo = geometry(size)
    boxes = np.array(geo.units[2 * size:])  # (n, n) cells of each box
    return np.sort((grids[:, boxes] != 0).sum(axis=2), axis=1)


def _line_counts(grids: np.ndarray, size: int) -> np.ndarray:
    """(B, n*n) -> (B, 2n) sorted counts of givens per row and per column together (a transpose swaps the two)."""
    board = grids.reshape(-1, size, size) != 0
    return np.sort(np.concatenate([board.sum(axis=2), board.sum(axis=1)], axis=1), axis=1)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from(SIZES))
def test_augment_grids_keeps_validity(generated, seed: int, size: int) -> None:
    puzzles, solutions = (np.repeat(a, 4, axis=0) for a in generated[size])
    aug_p, aug_s = augment_grids(np.random.default_rng(seed), puzzles, solutions, size)
    assert aug_p.dtype == puzzles.dtype and aug_p.shape == puzzles.shape
    assert valid_solutions(aug_s, size).all()
    assert np.all((aug_p == 0) | (aug_p == aug_s))  # givens still agree with the solution
    # Invariants of the symmetry group, checked without inverting the transform: the per-digit given counts up to
    # relabelling, the per-box counts, and the per-line counts (rows and columns together).
    digit_counts = lambda g: np.sort(np.stack([(g == d).sum(axis=1) for d in range(size + 1)], axis=1)[:, 1:], axis=1)
    assert np.array_equal(digit_counts(aug_p), digit_counts(puzzles))
    assert np.array_equal(_box_counts(aug_p, size), _box_counts(puzzles, size))
    assert np.array_equal(_line_counts(aug_p, size), _line_counts(puzzles, size))
    assert not np.array_equal(aug_s, solutions)


def test_augment_6x6_never_transposes() -> None:
    rng = np.random.default_rng(0)
    _, source = random_transforms(rng, 2000, 6)
    # Each output row reads a single source row (a transpose would read a source column).
    rows = source.reshape(-1, 6, 6) // 6
    assert np.all(rows == rows[:, :, :1])
    _, source = random_transforms(rng, 2000, 9)
    rows = source.reshape(-1, 9, 9) // 9
    transposed = ~np.all(rows == rows[:, :, :1], axis=(1, 2))
    assert 0.4 < transposed.mean() < 0.6  # square boxes: a transpose half of the time, as the official builder


def test_task_augment_tokens(generated) -> None:
    task = SudokuTask(SudokuConfig(size=6))
    puzzles, solutions = generated[6]
    inputs, labels = puzzles + 1, solutions + 1
    inputs[0] = 0  # a PAD row stays PAD
    out_in, out_lab = task.augment(np.random.default_rng(1), inputs, labels)
    assert out_in.dtype == inputs.dtype and out_in.shape == inputs.shape
    assert np.all(out_in[0] == 0)
    assert valid_solutions(out_lab - 1, 6).all()
    assert np.all((out_in[1:] == 1) | (out_in[1:] == out_lab[1:]))
    assert np.array_equal((out_in == 1).sum(axis=1), (inputs == 1).sum(axis=1))


# ---------------------------------------------------------------------------------------------------------------------
# CSV


GOOD_Q = "4...3.......6..8..........1....5..9..8....6...7.2........1.27..5.3....4.9........"
GOOD_A = "468931527751624839392578461134756298289413675675289314846192753513867942927345186"


def write_csv(tmp_path: Path, rows: list[str], header: str = "source,question,answer,rating") -> Path:
    path = tmp_path / "puzzles.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_load_csv_good(tmp_path: Path) -> None:
    path = write_csv(tmp_path, [f"x,{GOOD_Q},{GOOD_A},600", f"y,{GOOD_Q.replace('.', '0')},{GOOD_A},0", ""])
    questions, answers, ratings = load_csv(path)
    assert questions.shape == answers.shape == (2, 81) and questions.dtype == answers.dtype == np.uint8
    assert np.array_equal(questions[0], questions[1]) and questions[0, 0] == 4 and questions[0, 1] == 0
    assert "".join(map(str, answers[0])) == GOOD_A and ratings.tolist() == [600, 0]
    no_rating = write_csv(tmp_path, [f"{GOOD_Q},{GOOD_A}"], header="question,answer")
    assert load_csv(no_rating)[2].tolist() == [0]


def test_load_csv_real_file() -> None:
    questions, answers, ratings = load_csv(data_file("magictour-top1465.csv"))
    assert questions.shape == (1465, 81) and valid_solutions(answers, 9).all() and (ratings > 0).all()


BAD_ANSWER = GOOD_A[:9][::-1] + GOOD_A[9:]  # row 1 reversed: rows still complete, columns and boxes are not
BAD_ROWS = [
    (f"x,{GOOD_Q[:-1]},{GOOD_A},1", "question has 80 characters"),
    (f"x,{GOOD_Q},{GOOD_A}5,1", "answer has 82 characters"),
    (f"x,{GOOD_Q[:5]}x{GOOD_Q[6:]},{GOOD_A},1", "question has 'x' at position 6"),
    (f"x,{GOOD_Q},{GOOD_A[:3]}.{GOOD_A[4:]},1", "answer has '.' at position 4"),
    (f"x,5{GOOD_Q[1:]},{GOOD_A},1", "given 5 at row 1, column 1 disagrees with the answer's 4"),
    (f"x,{'.' * 81},{BAD_ANSWER},1", "answer is not a valid Sudoku: column 1 repeats"),
    (f"x,{GOOD_Q},{GOOD_A}", "expected 4 fields"),
    (f"x,{GOOD_Q},{GOOD_A},1,extra", "expected 4 fields"),
    (f"x,{GOOD_Q},{GOOD_A},hard", "rating 'hard' is not an integer in 0..10^18"),
]


@pytest.mark.parametrize("row, problem", BAD_ROWS)
def test_load_csv_names_first_bad_row(tmp_path: Path, row: str, problem: str) -> None:
    good = f"x,{GOOD_Q},{GOOD_A},1"
    path = write_csv(tmp_path, [good, good, row, good, row])
    with pytest.raises(UserError) as info:
        load_csv(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4: ") and problem in message, message
    assert "\n" not in message


def test_load_csv_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        load_csv(tmp_path / "missing.csv")
    with pytest.raises(UserError, match=r":1: the header must name the columns question and answer"):
        load_csv(write_csv(tmp_path, [f"x,{GOOD_Q}"], header="source,question"))
    with pytest.raises(UserError, match="no puzzles"):
        load_csv(write_csv(tmp_path, []))
    with pytest.raises(UserError, match="81 characters, expected 16"):
        load_csv(write_csv(tmp_path, [f"x,{GOOD_Q},{GOOD_A},1"]), size=4)


# ---------------------------------------------------------------------------------------------------------------------
# Task: building, scoring, rendering


def test_build_generated_layout_and_determinism(tmp_path: Path) -> None:
    cfg = SudokuConfig(size=6, train_size=12, test_size=10, num_aug=3)
    task = SudokuTask(cfg)
    assert task.metadata().vocab_size == 8 and task.metadata().seq_len == 36
    train, test = task.build("train", 5), task.build("test", 5)
    fresh = SudokuTask(cfg)
    again_test, again_train = fresh.build("test", 5), fresh.build("train", 5)  # order of builds does not matter
    for a, b in ((train, again_train), (test, again_test)):
        for name in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(SudokuTask(cfg).build("test", 6).inputs, test.inputs)

    # Train: 12 groups of 1 + 3 puzzles (original first), ids all 0; test: one unaugmented puzzle per group.
    assert train.inputs.shape == (48, 36) and train.inputs.dtype == np.uint8
    assert np.array_equal(train.group_indices, np.arange(0, 49, 4))
    assert np.array_equal(train.puzzle_indices, np.arange(49)) and not train.puzzle_identifiers.any()
    assert test.inputs.shape == (10, 36) and np.array_equal(test.group_indices, np.arange(11))
    for split in (train, test):
        assert valid_solutions(split.labels - 1, 6).all() and split.inputs.min() >= 1
        assert np.all((split.inputs == 1) | (split.inputs == split.labels))
    originals = train.inputs[::4]
    assert all(is_unique(p - 1, 6) for p in originals[:3])
    groups = train.inputs.reshape(12, 4, 36)
    assert np.all((groups == 1).sum(axis=2) == (groups[:, :1] == 1).sum(axis=2))  # copies keep the blank count
    # Disjoint splits, no repeats.
    assert not {p.tobytes() for p in originals} & {p.tobytes() for p in test.inputs}
    assert len({p.tobytes() for p in test.inputs}) == 10

    # Same config and seed -> byte-identical files.
    data = DataConfig(seed=3, sudoku=SudokuConfig(size=4, train_size=6, test_size=4, num_aug=2))
    a, b = build_dataset(data, tmp_path / "a"), build_dataset(data, tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and not p.name.startswith("."))  # data only
    assert len(files) == 13 and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_test_puzzles_with_their_own_blank_counts(tmp_path: Path) -> None:
    """sudoku9-cpu's layout: training mixes blank counts, the test set has its own range from its own stream, and
    no test puzzle shares a solution grid with a training one (so no augmentation of it can be trained on)."""
    cfg = SudokuConfig(size=6, train_size=60, test_size=20, num_aug=0, min_blanks=8, max_blanks=30,
                       test_min_blanks=20, test_max_blanks=22)
    task = SudokuTask(cfg)
    train, test = task.build("train", 1), task.build("test", 1)
    blanks = (test.inputs == 1).sum(axis=1)
    assert test.inputs.shape == (20, 36) and blanks.min() >= 20 and blanks.max() <= 22
    assert (train.inputs == 1).sum(axis=1).min() < 20  # the mix reaches below the test range
    assert not {s.tobytes() for s in train.labels} & {s.tobytes() for s in test.labels}
    assert all(is_unique(p - 1, 6) for p in test.inputs) and valid_solutions(test.labels - 1, 6).all()
    same = SudokuTask(cfg)  # deterministic, whichever split is built first
    assert np.array_equal(same.build("test", 1).inputs, test.inputs)
    plain = SudokuTask(SudokuConfig(size=6, train_size=60, test_size=20, num_aug=0, min_blanks=8, max_blanks=30))
    assert not np.array_equal(plain.build("test", 1).inputs, test.inputs)  # -1: the training range, one stream


def test_public_test_set_beside_generated_training() -> None:
    cfg = SudokuConfig(size=9, train_size=2, test_size=5, num_aug=0, test_csv=str(data_file("magictour-top1465.csv")))
    test = SudokuTask(cfg).build("test", 0)
    questions, _, _ = load_csv(data_file("magictour-top1465.csv"))
    assert test.inputs.shape == (5, 81) and {q.tobytes() for q in test.inputs - 1} <= {q.tobytes() for q in questions}


def test_build_from_csv() -> None:
    path = str(data_file("magictour-top1465.csv"))
    cfg = SudokuConfig(csv=path, train_size=20, test_size=15, num_aug=2)
    train, test = SudokuTask(cfg).build("train", 0), SudokuTask(cfg).build("test", 0)
    # One of the 20 training rows is a symmetric copy of a test puzzle's grid (magictour holds such twins): dropped.
    assert train.inputs.shape == (19 * 3, 81) and test.inputs.shape == (15, 81)
    assert np.array_equal(train.inputs, SudokuTask(cfg).build("train", 0).inputs)
    questions, answers, _ = load_csv(path)
    known = {q.tobytes(): a for q, a in zip(questions + 1, answers + 1)}
    for puzzle, label in zip(train.inputs[::3], train.labels[::3]):
        assert np.array_equal(known[puzzle.tobytes()], label)  # originals are CSV rows, with their answers
    assert not {p.tobytes() for p in train.inputs[::3]} & {p.tobytes() for p in test.inputs}
    assert np.all((train.inputs == 1) | (train.inputs == train.labels))
    assert valid_solutions(train.labels - 1, 9).all()

    other = SudokuTask(SudokuConfig(csv=path, test_csv=str(data_file("tdoku-17clue.csv")), train_size=5,
                                    test_size=7, num_aug=0)).build("test", 0)
    assert other.inputs.shape == (7, 81) and np.all((other.inputs > 1).sum(axis=1) == 17)
    with pytest.raises(UserError, match="fewer than data.sudoku.train_size"):
        SudokuTask(SudokuConfig(csv=path, train_size=2000)).build("train", 0)
    with pytest.raises(UserError, match="all 1465 puzzles go to train"):
        SudokuTask(SudokuConfig(csv=path, train_size=1465)).build("test", 0)


def test_score_and_render(generated) -> None:
    task = SudokuTask(SudokuConfig(size=4))
    puzzles, solutions = generated[4]
    inputs, labels = puzzles + 1, solutions + 1
    preds = labels.copy()
    relabelled = np.array([0, 1, 3, 4, 5, 2])[labels[1]]  # a valid grid, but it changes the givens
    preds[1] = relabelled
    preds[2, 0] = 0  # PAD is never a digit
    valid = task.score(inputs, preds, labels)["valid"]
    assert valid.shape == (len(inputs),) and valid.tolist() == [1.0, 0.0, 0.0] + [1.0] * (len(inputs) - 3)

    text = task.render(inputs[1], preds[1], labels[1])
    assert text.isascii() and "-+-" in text and "|" in text
    wrong = int((preds[1] != labels[1]).sum())
    assert text.count("*") == wrong + 1 and f"{wrong} of 16 cells wrong" in text  # +1: the legend
    assert "solved" in task.render(inputs[0], preds[0], labels[0])
    assert "solution" in task.render(inputs[0], labels=labels[0])
    assert np.array_equal(task.grid(inputs[0]), puzzles[0].reshape(4, 4))


# ---------------------------------------------------------------------------------------------------------------------
# Held out by symmetry class: no augmentation of an unseen puzzle is trained on


LINE_ORDERS = np.array([[band[k] * 3 + rows[k][i] for k in range(3) for i in range(3)]
                        for band in itertools.permutations(range(3))
                        for rows in itertools.product(itertools.permutations(range(3)), repeat=3)])  # (1296, 9)


def same_class(a: np.ndarray, b: np.ndarray) -> bool:
    """Exhaustively: is some symmetry of the 9x9 grid `a` (transpose x 1,296 row orders x 1,296 column orders x the
    relabelling the first row then fixes) equal to `b`? Independent of `grid_classes`."""
    a, b = a.reshape(9, 9).astype(np.int64) - 1, b.reshape(9, 9).astype(np.int64) - 1
    for grid in (a, a.T):
        for rows in LINE_ORDERS:
            moved = grid[rows][:, LINE_ORDERS].transpose(1, 0, 2)  # (1296 column orders, 9, 9)
            relabel = np.zeros((len(moved), 9), np.int64)
            np.put_along_axis(relabel, moved[:, 0], np.broadcast_to(b[0], relabel.shape), axis=1)
            if np.any(np.all(np.take_along_axis(relabel, moved.reshape(len(moved), 81), axis=1) == b.reshape(81), 1)):
                return True
    return False


@pytest.mark.parametrize("size", SIZES)
def test_grid_classes_are_invariant_and_tell_grids_apart(size: int) -> None:
    rng = np.random.default_rng(size)
    solutions = np.stack([generate(rng, size, max_blanks=1)[1] for _ in range(40)])
    classes = grid_classes(solutions, size)
    for seed in range(3):
        moved = augment_grids(np.random.default_rng(seed), solutions, solutions, size)[1]
        assert not np.array_equal(moved, solutions) and np.array_equal(grid_classes(moved, size), classes)
    if size == 9:  # 5.5e9 classes: 40 random grids are 40 classes
        assert len(set(classes.tolist())) == 40
    with pytest.raises(ValueError, match="complete grids"):
        grid_classes(np.zeros((1, size * size), np.uint8), size)


def test_grid_class_matches_are_true_symmetries_on_the_public_list() -> None:
    """tdoku-hard holds symmetric copies: the fingerprint's matches there are real (checked exhaustively), and two
    grids of different fingerprints are not symmetric."""
    _, answers, _ = load_csv(data_file("tdoku-hard.csv"))
    answers = answers[:4000]
    classes = grid_classes(answers, 9)
    order = np.argsort(classes, kind="stable")
    twins = [(i, j) for i, j in zip(order[:-1], order[1:])
             if classes[i] == classes[j] and not np.array_equal(answers[i], answers[j])]
    assert twins, "the first 4,000 rows hold symmetric copies"
    i, j = twins[0]
    assert same_class(answers[i], answers[j])
    assert not same_class(answers[i], answers[i + 1 if i + 1 != j else i + 2])
    moved = augment_grids(np.random.default_rng(0), answers[:1], answers[:1], 9)[1][0]
    assert same_class(answers[0], moved)


def write_grids_csv(path: Path, puzzles: np.ndarray, solutions: np.ndarray) -> str:
    text = "".join(f"planted,{''.join(map(str, p)).replace('0', '.')},{''.join(map(str, s))},0\n"
                   for p, s in zip(puzzles, solutions))
    path.write_text("source,question,answer,rating\n" + text)
    return str(path)


def test_csv_training_never_holds_a_symmetry_of_an_unseen_grid(tmp_path: Path) -> None:
    """A planted leak: symmetric copies of CSV rows (new givens on a moved solution grid, and moved puzzles) and of
    an excluded file's rows. The row split alone puts copies on both sides; the built training set holds none."""
    questions, answers, _ = load_csv(data_file("magictour-top1465.csv"))
    rng = np.random.default_rng(0)
    base_q, base_a = questions[:60], answers[:60]
    copy_q, copy_a = augment_grids(rng, base_q[:20], base_a[:20], 9)
    copy_q[10:] = np.where(rng.random((10, 81)) < 0.5, copy_a[10:], 0)  # other givens, the same (moved) grid
    excluded_q, excluded_a = questions[100:110], answers[100:110]
    leak_q, leak_a = augment_grids(rng, excluded_q, excluded_a, 9)
    csv = write_grids_csv(tmp_path / "list.csv", np.concatenate([base_q, copy_q, leak_q]),
                    np.concatenate([base_a, copy_a, leak_a]))
    exclude = write_grids_csv(tmp_path / "unseen.csv", excluded_q, excluded_a)
    cfg = SudokuConfig(csv=csv, train_size=75, test_size=15, num_aug=0)
    task = SudokuTask(cfg)
    rows = task._csv.split("train", 0, csv, "", 75, 15)[1]
    test = task.build("test", 0).labels - 1
    key = {a.tobytes(): i for i, a in enumerate(np.concatenate([base_a, copy_a, leak_a]))}
    twin = {i: 60 + i for i in range(20)} | {60 + i: i for i in range(20)}
    held = {key[a.tobytes()] for a in test}
    straddling = [key[a.tobytes()] for a in rows if twin.get(key[a.tobytes()]) in held]
    assert straddling, "the plant must put a copy on each side of the row split"

    train = task.build("train", 0).labels - 1
    trained = {key[a.tobytes()] for a in train}
    assert not any(twin.get(i) in held for i in trained)
    assert trained & set(range(80, 90)), "without `exclude` the excluded file's copies are trained on"
    excluding = SudokuTask(SudokuConfig(csv=csv, train_size=75, test_size=15, num_aug=0, exclude=(exclude,)))
    trained = {key[a.tobytes()] for a in excluding.build("train", 0).labels - 1}
    assert not trained & set(range(80, 90)) and len(trained) == len(train) - len(set(range(80, 90)) & {
        key[a.tobytes()] for a in train})
    mixed = SudokuTask(SudokuConfig(csv=csv, train_size=75, test_size=15, num_aug=0, generated=7, min_blanks=30,
                                    max_blanks=40)).build("train", 0)
    assert len(mixed.inputs) == len(train) + 7 and np.all((mixed.inputs[-7:] == 1).sum(1) >= 30)


def test_sudoku_hard_preset_split(tmp_path: Path) -> None:
    """The preset's split: 1,000 held-out rows of tdoku-hard, its training rows minus every symmetric copy of a
    held-out grid or a magictour one (checked by fingerprint here, by exhaustive search above)."""
    data_file("tdoku-hard.csv")
    from ponder.config import resolve
    cfg = resolve("sudoku-hard-cpu", ["data.sudoku.generated=0"])
    sudoku = SudokuConfig(**{**vars(cfg.data.sudoku), "csv": str(DATA / "tdoku-hard.csv"),
                             "exclude": (str(DATA / "magictour-top1465.csv"),)})
    task = SudokuTask(sudoku)
    train, test = task.build("train", 0).labels - 1, task.build("test", 0).labels - 1
    _, magictour, _ = load_csv(DATA / "magictour-top1465.csv")
    assert len(test) == 1000 and 38000 < len(train) < 39000
    assert not np.isin(grid_classes(train, 9), grid_classes(np.concatenate([test, magictour]), 9)).any()
    # The preset's paths are relative to the repository root, with ../shared beside it.
    assert cfg.data.sudoku.csv == "../shared/data/sudoku/tdoku-hard.csv"


@pytest.mark.slow
def test_curriculum_first_stage_holds_no_hard_test_grid() -> None:
    """The curriculum's first stage (`sudoku9-cpu`, 12,000 generated puzzles: ~70 s to build) shares no symmetry
    class with the held-out tdoku-hard 1,000 nor with magictour, so neither stage trains on a test puzzle."""
    data_file("tdoku-hard.csv")
    from ponder.config import resolve
    first = resolve("sudoku9-cpu", []).data.sudoku
    hard = resolve("sudoku-hard-cpu", ["data.sudoku.generated=0"]).data.sudoku
    test = SudokuTask(SudokuConfig(**{**vars(hard), "csv": str(DATA / "tdoku-hard.csv"), "exclude": ()}))
    _, magictour, _ = load_csv(DATA / "magictour-top1465.csv")
    held_out = grid_classes(np.concatenate([test.build("test", 0).labels - 1, magictour]), 9)
    train = SudokuTask(first).build("train", 0).labels - 1
    assert len(train) == 12000 and not np.isin(grid_classes(train, 9), held_out).any()


def naive_singles_fill(puzzle: np.ndarray) -> float:
    """The share of blanks that naked and hidden singles fix, by the textbook definition (independent of the solver's
    bit masks): fill a cell with one candidate, or a digit with one place left in a row, column or box; repeat."""
    grid = puzzle.reshape(9, 9).astype(int).copy()
    units = ([[(r, c) for c in range(9)] for r in range(9)] + [[(r, c) for r in range(9)] for c in range(9)]
             + [[(3 * (b // 3) + i, 3 * (b % 3) + j) for i in range(3) for j in range(3)] for b in range(9)])

    def candidates(r: int, c: int) -> set[int]:
        box = grid[3 * (r // 3):3 * (r // 3) + 3, 3 * (c // 3):3 * (c // 3) + 3]
        return set(range(1, 10)) - set(grid[r]) - set(grid[:, c]) - set(box.reshape(-1))

    changed = True
    while changed:
        changed = False
        for r, c in zip(*np.nonzero(grid == 0)):
            if len(cands := candidates(r, c)) == 1:
                grid[r, c], changed = cands.pop(), True
        for unit in units:
            for digit in set(range(1, 10)) - {grid[r, c] for r, c in unit}:
                places = [(r, c) for r, c in unit if grid[r, c] == 0 and digit in candidates(r, c)]
                if len(places) == 1:
                    grid[places[0]], changed = digit, True
    blanks = puzzle == 0
    return float((grid.reshape(-1)[blanks] != 0).mean()) if blanks.any() else 1.0


def test_singles_fill_counts_what_propagation_fixes(generated) -> None:
    puzzles, solutions = generated[9]
    one_blank = solutions[:1].copy()
    one_blank[0, 40] = 0
    assert singles_fill(one_blank, 9).tolist() == [1.0]
    assert singles_fill(np.zeros((1, 81), np.uint8), 9).tolist() == [0.0]
    # Minimal generated puzzles, and solutions with 50-70% of their cells blanked at random (singles stall part-way
    # on the sparser ones: where the two definitions could part).
    rng = np.random.default_rng(0)
    blanked = [solutions * (rng.random(solutions.shape) > share) for share in (0.5, 0.6, 0.65, 0.7)]
    fills = []
    for grids in (puzzles, *blanked):
        fills += singles_fill(grids, 9).tolist()
        assert np.allclose(singles_fill(grids, 9), [naive_singles_fill(g) for g in grids])
    assert any(0 < f < 1 for f in fills) and 1.0 in fills


def test_tdoku_hard_starts_with_no_single() -> None:
    """What bench/sudoku_hardness.py reports: tdoku's hardest list gives propagation nothing to place."""
    questions, _, _ = load_csv(data_file("tdoku-hard.csv"))
    assert np.all(singles_fill(questions[:20], 9) == 0)
    assert [naive_singles_fill(q) for q in questions[:3]] == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------------------------------------------
# Test-time symmetries and rule conflicts


def test_versions_round_trip_and_keep_puzzles_valid(generated) -> None:
    task = SudokuTask(SudokuConfig(size=9))
    puzzles, solutions = generated[9]
    version, back = task.versions(np.random.default_rng(1), puzzles + 1)
    solved, _ = task.versions(np.random.default_rng(1), solutions + 1)  # the same symmetries
    assert not np.array_equal(version, puzzles + 1)
    assert np.array_equal(back(version), puzzles + 1) and np.array_equal(back(solved), solutions + 1)
    assert task.score(version, solved, solved)["valid"].all()
    assert all(is_unique(v - 1, 9) for v in version)


def test_rule_conflicts_name_the_broken_cells(generated) -> None:
    task = SudokuTask(SudokuConfig(size=9))
    puzzles, solutions = generated[9]
    inputs, preds = puzzles + 1, solutions + 1
    assert not task.conflicts(inputs, preds).any()
    wrong = preds.copy()
    blank = int(np.flatnonzero(puzzles[0] == 0)[0])
    wrong[0, blank] = wrong[0, blank] % 9 + 2  # another digit: it repeats in the cell's row, column and box
    given = int(np.flatnonzero(puzzles[1])[0])
    wrong[1, given] = 0  # PAD: no digit, and a changed given
    broken = task.conflicts(inputs, wrong)
    peers = set(geometry(9).peers[blank])
    assert broken[0, blank] and broken[0].sum() >= 2 and set(np.flatnonzero(broken[0])) - {blank} <= peers
    assert np.flatnonzero(broken[1]).tolist() == [given] and not broken[2:].any()
    assert task.score(inputs, wrong, preds)["rule_breaking_cells"][1] == pytest.approx(1 / 81)
