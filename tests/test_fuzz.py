"""Property-based fuzzing of every loader and the checkpoint reader: whatever bytes a file holds, the loader returns a
valid result or raises UserError (one clear line), never another exception, never a hang.

Two generators per loader, each starting from a valid file:
- by example: the file's bytes mutated (flipped anywhere or in the header, inserted, deleted, cut off, spliced with
  adversarial snippets: deep nesting, 5,000-digit numbers, non-UTF-8 bytes, NaN);
- by class: the file parsed into its fields (JSON/YAML values, CSV cells, JSONL rows, safetensors header entries,
  state.pt entries, .npy elements and dtype) and one to three fields replaced by a value from a class the field
  cannot hold - numbers outside its range (negative, zero, beyond int64 and float64, NaN, inf, a fraction, a
  boolean, null), texts (empty, 100,000 characters, control characters, a lone surrogate, right-to-left marks,
  emoji, numbers written as text) - or an unknown field added, a field dropped, a list emptied; then the whole file
  written in another encoding (UTF-8 with BOM, UTF-16, Latin-1) now and then.
`make test` runs a fast profile (FUZZ_EXAMPLES, default 25 per loader and generator, derandomised); the slow profile
(`pytest -m slow -s tests/test_fuzz.py`, 1,000 random inputs per loader and generator, or FUZZ_EXAMPLES_SLOW=N)
prints the counts the README reports.
"""

import dataclasses
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


# values a field cannot hold, by class
NUMBERS = [-1, 0, -(2**63) - 1, 2**63, 2**64 + 1, 10**400, -(10**400), float("nan"), float("inf"), float("-inf"),
           1e308, -0.0, 0.5, True, None]
TEXTS = ["", " ", "x" * 100_000, "\x00", "\x1b[2J\x07\r", "\ud800", "\u202e\u200f", "\u00e9\u00df", "\U0001f642" * 3,
         "9" * 5000, "NaN", "-1", "1e999", "#### ", "question"]
ENCODINGS = ["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]


def leaves(obj, path=()):
    """Every place of a parsed file: (path, value), containers included (dicts and lists can be emptied or grown)."""
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, path + (i,))


def put(obj, path, value):
    if not path:
        return value
    obj[path[0]] = put(obj[path[0]], path[1:], value)
    return obj


def field_edits(seed, dump, values=NUMBERS + TEXTS):
    """A strategy of byte strings: the parsed `seed` (JSON-like: dicts, lists, scalars) with one to three places
    replaced by a value of the classes above, an unknown key added, a key dropped or a list emptied, serialised by
    `dump(obj) -> str`, then encoded (mostly UTF-8)."""
    import copy

    edit = st.tuples(st.sampled_from(["replace", "replace", "replace", "unknown", "drop", "empty"]),
                     st.integers(0, 10**6), st.sampled_from(values))

    def apply(case):
        edits, encoding = case
        obj = copy.deepcopy(seed)
        for kind, pos, value in edits:
            places = list(leaves(obj))
            path, old = places[pos % len(places)]
            if kind == "replace":
                obj = put(obj, path, value)
            elif kind == "unknown" and isinstance(old, dict):
                old["zz_unknown"] = value
            elif kind == "unknown" and isinstance(old, list):
                old.append(value)
            elif kind == "drop" and path:
                parent = places[0][1] if len(path) == 1 else dict(places)[path[:-1]]
                del parent[path[-1]]
            elif kind == "empty" and isinstance(old, (dict, list)):
                old.clear()
        try:
            out = dump(obj)
            if isinstance(out, bytes):  # a binary format: no text encoding
                return out
            return out.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")
        except (ValueError, TypeError, OverflowError, RecursionError):  # a value the writer refuses: the seed
            out = dump(seed)
            return out if isinstance(out, bytes) else out.encode()

    return st.tuples(st.lists(edit, min_size=1, max_size=3), st.sampled_from(ENCODINGS)).map(apply)


def check(name: str, load) -> None:
    """Run one load: a result or UserError, within BOUND_S; count what happened."""
    counts = COUNTS.setdefault(name, {"tried": 0, "ok": 0, "clean error": 0, "crash": 0, "hang": 0})
    counts["tried"] += 1
    t = time.perf_counter()
    try:
        load()
        counts["ok"] += 1
    except UserError as e:
        assert str(e) and "\n" not in str(e).strip(), f"{name}: a user error must be one line: {e!r}"
        str(e).encode("utf-8")  # printable on stderr (no lone surrogate from the file)
        counts["clean error"] += 1
    except BaseException:
        counts["crash"] += 1
        raise
    if time.perf_counter() - t >= BOUND_S:
        counts["hang"] += 1
        raise AssertionError(f"{name}: one load took {time.perf_counter() - t:.1f}s")


def fuzz(name: str, inputs, write, load, slow: bool):
    """A hypothesis test: draw file contents from the strategy `inputs`, `write(bytes, folder)` them, `load(folder)`."""
    @settings(max_examples=SLOW if slow else FAST, deadline=None, database=None, derandomize=not slow,
              suppress_health_check=list(HealthCheck))
    @given(data=inputs)
    def run(data):
        folder = Path(os.environ["FUZZ_TMP"]) / "case"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write(data, folder)
        check(name, lambda: load(folder))

    run()


# ---------------------------------------------------------------------------------------------------------------------
# the loaders, each from a valid file


def csv_text(rows) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([[str(x) for x in row] if isinstance(row, list) else [str(row)]
                                                     for row in rows] if isinstance(rows, list) else [[str(rows)]])
    return buf.getvalue()


def json_text(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def jsonl_text(rows) -> str:
    return "".join(json_text(r) + "\n" for r in rows) if isinstance(rows, list) else json_text(rows)


@dataclasses.dataclass
class Loader:
    seed: bytes  # a valid file
    fields: object  # the strategy of its field-by-class edits
    write: object  # (bytes, folder) -> None
    load: object  # folder -> result (or UserError)


def sudoku_csv():
    from ponder.tasks.sudoku import generate, load_csv

    rows = [["source", "question", "answer", "rating"]]
    rng = np.random.default_rng(0)
    for _ in range(3):
        q, a = generate(rng, 4)[:2]
        rows.append(["gen", "".join(str(int(x)) if x else "." for x in q), "".join(str(int(x)) for x in a), 3])
    return Loader(csv_text(rows).encode(), field_edits(rows, csv_text), lambda d, f: (f / "s.csv").write_bytes(d),
                  lambda f: load_csv(f / "s.csv", 4))


def maze_csv():
    from ponder.tasks.maze import generate, load_csv
    from helpers import maze_text as text

    rng = np.random.default_rng(0)
    rows = [["source", "question", "answer", "rating"]]
    for i in range(2):
        q, a = generate(rng, 7, 6, 0.0)
        rows.append(["gen", text(q), text(a), i])
    return Loader(csv_text(rows).encode(), field_edits(rows, csv_text), lambda d, f: (f / "m.csv").write_bytes(d),
                  lambda f: load_csv(f / "m.csv", 7))


def arc_files():
    from ponder.tasks.arc import load_files

    task = {"train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}], "test": [{"input": [[5]], "output": [[6]]}]}

    def write(d, f):
        (f / "t").mkdir()
        (f / "t" / "abc.json").write_bytes(d)

    return Loader(json.dumps(task).encode(), field_edits(task, json_text), write, lambda f: load_files(f / "t"))


def arc_kaggle():
    from ponder.tasks.arc import load_kaggle

    challenges = {"abc": {"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3]]}]}}
    solutions = {"abc": [[[4]]]}

    def write(d, f):
        (f / "arc-agi_training_challenges.json").write_bytes(d)
        (f / "arc-agi_training_solutions.json").write_text(json.dumps(solutions))

    return Loader(json.dumps(challenges).encode(), field_edits(challenges, json_text), write,
                  lambda f: load_kaggle(f, "training"))


def arc_kaggle_solutions():
    from ponder.tasks.arc import load_kaggle

    challenges = {"abc": {"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3]]}]}}
    solutions = {"abc": [[[4]]]}

    def write(d, f):
        (f / "arc-agi_training_challenges.json").write_text(json.dumps(challenges))
        (f / "arc-agi_training_solutions.json").write_bytes(d)

    return Loader(json.dumps(solutions).encode(), field_edits(solutions, json_text), write,
                  lambda f: load_kaggle(f, "training"))


def arc_solve_input():
    from ponder.config import ArcConfig
    from ponder.tasks.arc import ArcTask

    task = ArcTask(ArcConfig(canvas=10))
    seed = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1, 2], [3, 4]]}]}
    return Loader(json.dumps(seed).encode(), field_edits(seed, json_text),
                  lambda d, f: (f / "abc.json").write_bytes(d),
                  lambda f: task.parse(_text(f / "abc.json"), name=str(f / "abc.json")))


def _text(path: Path) -> str:
    from ponder.solve import read_input

    return read_input(str(path))


def gsm8k():
    from ponder.lm.data import load_gsm8k

    rows = [{"question": "How many?", "answer": "2 + 2 = 4\n#### 4"}, {"question": "And now?", "answer": "#### 1,234"}]
    return Loader(jsonl_text(rows).encode(), field_edits(rows, jsonl_text), lambda d, f: (f / "g.jsonl").write_bytes(d),
                  lambda f: load_gsm8k(f / "g.jsonl"))


def corpus_txt():
    from ponder.lm.data import load_documents

    docs = ["The first document.\nIts second line.", "The second document."]
    return Loader("\n\n".join(docs).encode(), field_edits(docs, lambda d: "\n\n".join(map(str, d))
                                                           if isinstance(d, list) else str(d)),
                  lambda d, f: (f / "c.txt").write_bytes(d), lambda f: load_documents(f / "c.txt"))


def corpus_jsonl():
    from ponder.lm.data import load_documents

    rows = [{"text": "The first document."}, {"text": "The second."}]
    return Loader(jsonl_text(rows).encode(), field_edits(rows, jsonl_text), lambda d, f: (f / "c.jsonl").write_bytes(d),
                  lambda f: load_documents(f / "c.jsonl"))


def dataset_json():
    from ponder.tasks.dataset import Metadata, from_pairs, read_split, write_split

    def write(d, f):
        x = np.ones((3, 4), np.uint8)
        write_split(f, "train", from_pairs(x, x), Metadata(seq_len=4, vocab_size=3))
        (f / "train" / "dataset.json").write_bytes(d)

    meta = {"seq_len": 4, "vocab_size": 3, "pad_id": 0, "ignore_label_id": 0, "num_puzzle_identifiers": 1,
            "sets": ["all"]}
    return Loader(json.dumps(meta).encode(), field_edits(meta, json_text), write, lambda f: read_split(f, "train"))


def npy_bytes(a) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=a.dtype == object)
    return buf.getvalue()


def npy_edits(a):
    """A strategy of .npy files: `a` with elements set to values outside its dtype's range (held in a dtype that
    can hold them: int64, uint64, float64 or object), its dtype changed, or its shape changed."""
    def apply(case):
        kind, pos, value, dtype = case
        b = a.copy()
        if kind == "value":
            if isinstance(value, float):
                b = b.astype(np.float64)
            elif value is None or isinstance(value, str) or abs(int(value)) >= 2**63:
                b = b.astype(object)
            else:
                b = b.astype(np.int64)
            if b.size:
                b.flat[pos % b.size] = value
        elif kind == "dtype":
            b = b.astype(dtype)
        elif kind == "shape":
            b = b.reshape(-1) if pos % 3 == 0 else b.reshape(1, -1) if pos % 3 == 1 else b[:0]
        return npy_bytes(b)

    return st.tuples(st.sampled_from(["value", "value", "dtype", "shape"]), st.integers(0, 10**6),
                     st.sampled_from(NUMBERS + ["x", ""]),
                     st.sampled_from([np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
                                      np.float16, np.float32, np.float64, np.bool_, np.complex64])).map(apply)


def dataset_npy(field: str):
    from ponder.tasks.dataset import Metadata, from_pairs, read_split, write_split

    x = np.ones((3, 4), np.uint8)
    arrays = from_pairs(x, x)

    def write(d, f):
        write_split(f, "train", arrays, Metadata(seq_len=4, vocab_size=3))
        (f / "train" / f"all__{field}.npy").write_bytes(d)

    return Loader(npy_bytes(getattr(arrays, field)), npy_edits(getattr(arrays, field)), write,
                  lambda f: read_split(f, "train", mmap=False))


def safetensors_edits(raw: bytes):
    """A strategy of safetensors files: the header's entries (dtype, shape, data_offsets, __metadata__) edited by
    class, the tensor bytes kept."""
    import struct

    n = struct.unpack("<Q", raw[:8])[0]
    header, body = json.loads(raw[8:8 + n]), raw[8 + n:]

    def dump(obj):
        text = json.dumps(obj).encode()
        return struct.pack("<Q", len(text)) + text + body

    return field_edits(header, dump)


def state_edits(raw: bytes):
    """A strategy of state.pt files: its entries (step, sampler offsets, RNG states, carry tensors) edited by class."""
    import io

    import torch

    state = torch.load(io.BytesIO(raw), weights_only=False)

    def dump(obj):
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    return field_edits(state, dump)


def checkpoint_part(part: str):
    """A checkpoint folder of a tiny run, one of its files mutated; read as `ponder eval` and --resume read it."""
    import yaml

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

    raw = (base / part).read_bytes()
    if part == "meta.json":
        fields = field_edits(json.loads(raw), json_text)
    elif part == "config.yaml":
        fields = field_edits(yaml.safe_load(raw), lambda obj: yaml.safe_dump(obj, allow_unicode=True))
    elif part.endswith(".safetensors"):
        fields = safetensors_edits(raw)
    else:
        fields = state_edits(raw)
    return Loader(raw, fields, write, load)


LOADERS = {
    "sudoku CSV": sudoku_csv, "maze CSV": maze_csv, "ARC task file": arc_files, "ARC Kaggle file": arc_kaggle,
    "ARC Kaggle solutions": arc_kaggle_solutions, "ARC task for ponder solve": arc_solve_input,
    "GSM8K JSONL": gsm8k, "text corpus .txt": corpus_txt, "text corpus JSONL": corpus_jsonl,
    "dataset.json": dataset_json, "dataset inputs.npy": lambda: dataset_npy("inputs"),
    "dataset puzzle_indices.npy": lambda: dataset_npy("puzzle_indices"),
    "dataset group_indices.npy": lambda: dataset_npy("group_indices"),
    "checkpoint meta.json": lambda: checkpoint_part("meta.json"),
    "checkpoint config.yaml": lambda: checkpoint_part("config.yaml"),
    "checkpoint model.safetensors": lambda: checkpoint_part("model.safetensors"),
    "checkpoint ema.safetensors": lambda: checkpoint_part("ema.safetensors"),
    "checkpoint state.pt": lambda: checkpoint_part("state.pt"),
}
GENERATORS = {"bytes": lambda loader: mutations(loader.seed), "fields": lambda loader: loader.fields}


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
        lines = [f"{name}: {c['tried']} tried, {c['ok']} loaded, {c['clean error']} clean errors, {c['crash']} crashes, "
                 f"{c['hang']} hangs" for name, c in COUNTS.items()]
        total = sum(c["tried"] for c in COUNTS.values())
        print(f"\nfuzz counts ({total} inputs):\n" + "\n".join(lines))


def run_loader(name: str, generator: str, slow: bool) -> None:
    loader = LOADERS[name]()
    fuzz(f"{name} ({generator})", GENERATORS[generator](loader), loader.write, loader.load, slow)


@pytest.mark.parametrize("generator", GENERATORS)
@pytest.mark.parametrize("name", LOADERS)
def test_fuzz_fast(name, generator):
    run_loader(name, generator, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("generator", GENERATORS)
@pytest.mark.parametrize("name", LOADERS)
def test_fuzz_long(name, generator):
    run_loader(name, generator, slow=True)


# ---------------------------------------------------------------------------------------------------------------------
# the documented rules (docs/data.md, "What the loaders accept"): a file with no usable example is an error naming
# the file; a required column or field given twice is an error; other columns and fields are ignored


def test_a_file_without_a_usable_example_is_an_error_naming_it(tmp_path):
    from ponder.lm.data import load_documents, load_gsm8k
    from ponder.tasks.arc import load_files, load_kaggle
    from ponder.tasks.sudoku import load_csv

    cases = []
    (tmp_path / "s.csv").write_text("source,question,answer,rating\n\n\n")
    cases.append((tmp_path / "s.csv", lambda: load_csv(tmp_path / "s.csv", 4)))
    (tmp_path / "arc-agi_training_challenges.json").write_text("{}")
    (tmp_path / "arc-agi_training_solutions.json").write_text("{}")
    cases.append((tmp_path / "arc-agi_training_challenges.json", lambda: load_kaggle(tmp_path, "training")))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "abc.json").write_text(json.dumps({"train": [], "test": []}))
    cases.append((tmp_path / "t" / "abc.json", lambda: load_files(tmp_path / "t")))
    (tmp_path / "g.jsonl").write_text("\n\n")
    cases.append((tmp_path / "g.jsonl", lambda: load_gsm8k(tmp_path / "g.jsonl")))
    (tmp_path / "c.txt").write_text(" \n\n \n")
    cases.append((tmp_path / "c.txt", lambda: load_documents(tmp_path / "c.txt")))
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": ""}) + "\n")
    cases.append((tmp_path / "c.jsonl", lambda: load_documents(tmp_path / "c.jsonl")))
    for path, load in cases:
        with pytest.raises(UserError, match=str(path)):
            load()


def test_a_required_column_named_twice_is_an_error_and_other_columns_are_ignored(tmp_path):
    from ponder.tasks.sudoku import generate, load_csv

    q, a = generate(np.random.default_rng(0), 4)[:2]
    q_text, a_text = ("".join(str(int(x)) if x else "." for x in g) for g in (q, a))
    (tmp_path / "ok.csv").write_text(f"source,question,answer,rating,notes\ngen,{q_text},{a_text},3,anything\n")
    questions, answers, ratings = load_csv(tmp_path / "ok.csv", 4)  # `source` and `notes` ignored
    assert questions.shape == (1, 16) and int(ratings[0]) == 3
    (tmp_path / "twice.csv").write_text(f"question,answer,question\n{q_text},{a_text},{'.' * 16}\n")
    with pytest.raises(UserError, match="names the column question 2 times"):
        load_csv(tmp_path / "twice.csv", 4)


def test_unknown_json_fields_are_ignored_by_rule(tmp_path):
    from ponder.lm.data import load_gsm8k
    from ponder.tasks.arc import load_files

    (tmp_path / "t").mkdir()
    task = {"train": [{"input": [[1]], "output": [[2]], "note": "x"}], "test": [{"input": [[3]], "output": [[4]]}],
            "name": "a task with a name"}
    (tmp_path / "t" / "abc.json").write_text(json.dumps(task))
    assert load_files(tmp_path / "t")["abc"].train[0][1].tolist() == [[2]]
    (tmp_path / "g.jsonl").write_text(json.dumps({"question": "Q?", "answer": "#### 3", "id": 7}) + "\n")
    assert load_gsm8k(tmp_path / "g.jsonl")[0].answer in ("3", 3, 3.0)


# ---------------------------------------------------------------------------------------------------------------------
# every numeric config setting, by class: a value outside its range is one line; a value inside trains a step


def numeric_keys(cls=None, prefix=""):
    import typing

    from ponder.config import Config

    cls = cls or Config
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from numeric_keys(kind, prefix + f.name + ".")
        elif kind in (int, float):
            yield prefix + f.name


CONFIG_VALUES = ["-1", "0", "1e-9", str(2**62 + 1), "1" + "0" * 400, ".nan", ".inf", "-.inf", "1e308", "0.5", "true",
                 "x", "''", "[]"]
# the preset whose run reads the key (the others' keys are only validated: ARC needs data, lm a model download)
RUNS = {"data.maze.": ["maze-cpu", "data.maze.size=5", "data.maze.min_path=3", "data.maze.train_size=16",
                       "data.maze.test_size=8"],
        "data.ca1d.": ["ca1d-cpu", "data.ca1d.train_size=32", "data.ca1d.test_size=16", "data.ca1d.determined=false"]}
CHEAP = ["train.steps=1", "train.batch_size=8", "train.max_minutes=0", "train.checkpoint_every=0", "train.threads=1",
         "eval.max_examples=8", "eval.max_steps=2", "model.hidden=16", "model.n_heads=2"]


def config_case(key: str, value: str, folder: Path) -> None:
    """`ponder train PRESET ... key=value` for one step (and its evaluation): exit 0, or exit 2 with one line."""
    import contextlib
    import io

    from helpers import TINY
    from ponder.cli import main

    preset, *base = next((run for k, run in RUNS.items() if key.startswith(k)), ["demo", *TINY])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", preset, *base, *CHEAP, f"{key}={value}", "--out", str(folder / "run")])
    lines = err.getvalue().strip().splitlines()
    assert code == 0 or (code == 2 and len(lines) == 1 and lines[0].startswith("ponder: error:")), (key, value, code,
                                                                                                      lines[-3:])


def config_cases(slow: bool) -> list[tuple[str, str]]:
    cases = [(key, value) for key in numeric_keys() for value in CONFIG_VALUES]
    if slow:
        return cases
    import random

    return random.Random(0).sample(cases, 60)  # the fast profile: a fixed sample


@pytest.mark.parametrize("key,value", config_cases(slow=False))
def test_numeric_config_values_fast(key, value, tmp_path):
    config_case(key, value, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("key,value", config_cases(slow=True))
def test_numeric_config_values_long(key, value, tmp_path):
    config_case(key, value, tmp_path)
