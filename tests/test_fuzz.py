"""Property-based fuzzing of every loader and the checkpoint reader: whatever bytes a file holds, the loader returns a
valid result or raises UserError (one clear line), never another exception, never a hang.

Each loader starts from a valid file and gets it mutated (bytes flipped anywhere or in the header, inserted, deleted,
cut off, spliced with adversarial snippets: deep nesting, 5,000-digit numbers, non-UTF-8 bytes, NaN). `make test` runs
a fast profile (FUZZ_EXAMPLES, default 25 per loader, derandomised); the slow profile (`pytest -m slow -s
tests/test_fuzz.py`, 1,000 random inputs per loader, or FUZZ_EXAMPLES_SLOW=N) prints the counts the README reports.
"""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ponder import UserError

FAST = int(os.environ.get("FUZZ_EXAMPLES", "25"))
SLOW = int(os.environ.get("FUZZ_EXAMPLES_SLOW", "1000"))
BOUND_S = 5.0  # no single load may take longer: a hang is a failure
SNIPPETS = [b"[" * 5000, b"{" * 5000, b"9" * 5000, b"\xff\xfe", b"NaN", b"-1", b"1e309", b"\x00", b'"', b",",
            b"\n", b"null", b"[]", b"{}", b'{"a": ' * 3000]

COUNTS: dict[str, dict[str, int]] = {}


def mutations(seed: bytes):
    """A strategy of byte strings: `seed` with a few random edits."""
    edit = st.tuples(st.sampled_from(["flip", "head", "insert", "delete", "cut", "splice"]), st.integers(0, 10**6),
                     st.integers(0, 255), st.sampled_from(SNIPPETS))

    def apply(edits):
        data = bytearray(seed)
        for kind, pos, byte, snippet in edits:
            i = pos % (len(data) + 1)
            if kind == "flip" and data:
                data[i % len(data)] = byte
            elif kind == "head" and data:  # binary formats keep their structure in the first bytes
                data[pos % min(len(data), 256)] = byte
            elif kind == "insert":
                data[i:i] = bytes([byte])
            elif kind == "delete" and data:
                del data[i % len(data)]
            elif kind == "cut":
                del data[i:]
            elif kind == "splice":
                data[i:i] = snippet
        return bytes(data)

    return st.lists(edit, min_size=1, max_size=4).map(apply)


def check(name: str, load) -> None:
    """Run one load: a result or UserError, within BOUND_S; count what happened."""
    counts = COUNTS.setdefault(name, {"tried": 0, "ok": 0, "clean error": 0})
    counts["tried"] += 1
    t = time.perf_counter()
    try:
        load()
        counts["ok"] += 1
    except UserError as e:
        assert str(e) and "\n" not in str(e).strip(), f"{name}: a user error must be one line: {e!r}"
        counts["clean error"] += 1
    assert time.perf_counter() - t < BOUND_S, f"{name}: one load took {time.perf_counter() - t:.1f}s"


def fuzz(name: str, seed: bytes, write, load, slow: bool):
    """A hypothesis test: mutate `seed`, `write(bytes, folder)` it, `load(folder)` it."""
    @settings(max_examples=SLOW if slow else FAST, deadline=None, database=None, derandomize=not slow,
              suppress_health_check=list(HealthCheck))
    @given(data=mutations(seed))
    def run(data):
        folder = Path(os.environ["FUZZ_TMP"]) / "case"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write(data, folder)
        check(name, lambda: load(folder))

    run()


# ---------------------------------------------------------------------------------------------------------------------
# the loaders, each from a valid file


def sudoku_csv():
    from ponder.tasks.sudoku import generate, load_csv

    rows = ["source,question,answer,rating"]
    rng = np.random.default_rng(0)
    for _ in range(3):
        q, a = generate(rng, 4)[:2]
        rows.append("gen," + "".join(str(int(x)) if x else "." for x in q) + "," + "".join(str(int(x)) for x in a)
                    + ",3")
    return ("\n".join(rows) + "\n").encode(), lambda d, f: (f / "s.csv").write_bytes(d), \
        lambda f: load_csv(f / "s.csv", 4)


def maze_csv():
    from ponder.tasks.maze import generate, load_csv
    from helpers import maze_text as text

    rng = np.random.default_rng(0)
    rows = ["source,question,answer,rating"]
    for i in range(2):
        q, a = generate(rng, 7, 6, 0.0)
        rows.append(f"gen,{text(q)},{text(a)},{i}")
    return ("\n".join(rows) + "\n").encode(), lambda d, f: (f / "m.csv").write_bytes(d), \
        lambda f: load_csv(f / "m.csv", 7)


def arc_files():
    from ponder.tasks.arc import load_files

    task = {"train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}], "test": [{"input": [[5]], "output": [[6]]}]}

    def write(d, f):
        (f / "t").mkdir()
        (f / "t" / "abc.json").write_bytes(d)

    return json.dumps(task).encode(), write, lambda f: load_files(f / "t")


def arc_kaggle():
    from ponder.tasks.arc import load_kaggle

    challenges = {"abc": {"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3]]}]}}
    solutions = {"abc": [[[4]]]}

    def write(d, f):
        (f / "arc-agi_training_challenges.json").write_bytes(d)
        (f / "arc-agi_training_solutions.json").write_text(json.dumps(solutions))

    return json.dumps(challenges).encode(), write, lambda f: load_kaggle(f, "training")


def arc_solve_input():
    from ponder.config import ArcConfig
    from ponder.tasks.arc import ArcTask

    task = ArcTask(ArcConfig(canvas=10))
    seed = json.dumps({"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1, 2], [3, 4]]}]})
    return seed.encode(), lambda d, f: (f / "abc.json").write_bytes(d), \
        lambda f: task.parse(_text(f / "abc.json"), name=str(f / "abc.json"))


def _text(path: Path) -> str:
    from ponder.solve import read_input

    return read_input(str(path))


def gsm8k():
    from ponder.lm.data import load_gsm8k

    rows = [{"question": "How many?", "answer": "2 + 2 = 4\n#### 4"}, {"question": "And now?", "answer": "#### 1,234"}]
    return "".join(json.dumps(r) + "\n" for r in rows).encode(), lambda d, f: (f / "g.jsonl").write_bytes(d), \
        lambda f: load_gsm8k(f / "g.jsonl")


def dataset_json():
    from ponder.tasks.dataset import Metadata, from_pairs, read_split, write_split

    def write(d, f):
        x = np.ones((3, 4), np.uint8)
        write_split(f, "train", from_pairs(x, x), Metadata(seq_len=4, vocab_size=3))
        (f / "train" / "dataset.json").write_bytes(d)

    seed = json.dumps({"seq_len": 4, "vocab_size": 3, "pad_id": 0, "ignore_label_id": 0,
                       "num_puzzle_identifiers": 1, "sets": ["all"]}).encode()
    return seed, write, lambda f: read_split(f, "train")


def dataset_npy(field: str):
    from ponder.tasks.dataset import Metadata, from_pairs, read_split, write_split

    x = np.ones((3, 4), np.uint8)
    arrays = from_pairs(x, x)
    import io

    buf = io.BytesIO()
    np.save(buf, getattr(arrays, field))

    def write(d, f):
        write_split(f, "train", arrays, Metadata(seq_len=4, vocab_size=3))
        (f / "train" / f"all__{field}.npy").write_bytes(d)

    return buf.getvalue(), write, lambda f: read_split(f, "train", mmap=False)


def checkpoint_part(part: str):
    """A checkpoint folder of a tiny run, one of its files mutated; read as `ponder eval` and --resume read it."""
    from ponder import checkpoint
    from ponder.evaluate import load_model

    base = Path(os.environ["FUZZ_CKPT"])

    def write(d, f):
        shutil.copytree(base, f / "ck")
        (f / "ck" / part).write_bytes(d)

    def load(f):
        ck = checkpoint.find(f / "ck")
        load_model(ck, ema=part != "model.safetensors")  # the file being fuzzed is the one read
        checkpoint.load_state(ck)

    return (base / part).read_bytes(), write, load


LOADERS = {
    "sudoku CSV": sudoku_csv, "maze CSV": maze_csv, "ARC task file": arc_files, "ARC Kaggle file": arc_kaggle,
    "ARC task for ponder solve": arc_solve_input, "GSM8K JSONL": gsm8k, "dataset.json": dataset_json,
    "dataset inputs.npy": lambda: dataset_npy("inputs"), "dataset puzzle_indices.npy":
        lambda: dataset_npy("puzzle_indices"), "dataset group_indices.npy": lambda: dataset_npy("group_indices"),
    "checkpoint meta.json": lambda: checkpoint_part("meta.json"),
    "checkpoint config.yaml": lambda: checkpoint_part("config.yaml"),
    "checkpoint model.safetensors": lambda: checkpoint_part("model.safetensors"),
    "checkpoint ema.safetensors": lambda: checkpoint_part("ema.safetensors"),
    "checkpoint state.pt": lambda: checkpoint_part("state.pt"),
}


@pytest.fixture(scope="module", autouse=True)
def tiny_checkpoint(tmp_path_factory):
    from ponder.cli import main
    from helpers import TINY

    root = tmp_path_factory.mktemp("fuzz")
    assert main(["train", "demo", *TINY, "train.steps=1", "--out", str(root / "run")]) == 0
    os.environ["FUZZ_CKPT"] = str(next((root / "run" / "ckpt").iterdir()))
    os.environ["FUZZ_TMP"] = str(root / "cases")
    yield
    if COUNTS:
        lines = [f"{name}: {c['tried']} tried, {c['ok']} loaded, {c['clean error']} clean errors, 0 crashes, 0 hangs"
                 for name, c in COUNTS.items()]
        print("\nfuzz counts:\n" + "\n".join(lines))


@pytest.mark.parametrize("name", LOADERS)
def test_fuzz_fast(name):
    fuzz(name, *LOADERS[name](), slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", LOADERS)
def test_fuzz_long(name):
    fuzz(name, *LOADERS[name](), slow=True)
