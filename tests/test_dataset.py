"""The shared on-disk format (HRM/TRM layout) and the seeded sampler."""

import json

import numpy as np
import pytest

from ponder import UserError
from ponder.tasks.batches import Sampler
from ponder.tasks.dataset import FIELDS, Metadata, PuzzleArrays, from_pairs, read_split, write_split


def arrays() -> PuzzleArrays:
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 7, (10, 5)).astype(np.uint8)
    # 4 puzzles with 1, 2, 3, 4 examples; groups {0, 1}, {2, 3}
    return PuzzleArrays(inputs, (inputs + 1) % 7, np.array([0, 3, 1, 2], np.int32),
                        np.array([0, 1, 3, 6, 10], np.int32), np.array([0, 2, 4], np.int32))


def test_round_trip_official_layout(tmp_path):
    a = arrays()
    write_split(tmp_path, "train", a, Metadata(seq_len=5, vocab_size=7, num_puzzle_identifiers=4))
    names = sorted(p.name for p in (tmp_path / "train").iterdir())
    assert names == sorted(["dataset.json"] + [f"all__{f}.npy" for f in FIELDS])
    body = json.loads((tmp_path / "train" / "dataset.json").read_text())
    assert set(body) == {"pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len",
                         "num_puzzle_identifiers", "total_groups", "mean_puzzle_examples", "sets"}
    assert body["total_groups"] == 2 and body["mean_puzzle_examples"] == 2.5 and body["sets"] == ["all"]
    b, meta = read_split(tmp_path, "train")
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert np.load(tmp_path / "train" / "all__inputs.npy").dtype == np.uint8
    assert np.load(tmp_path / "train" / "all__puzzle_indices.npy").dtype == np.int32
    np.testing.assert_array_equal(b.example_puzzle_ids, [0, 3, 3, 1, 1, 1, 2, 2, 2, 2])


def test_from_pairs_groups():
    x = np.zeros((5, 3), np.uint8)
    a = from_pairs(x, x, groups=np.array([0, 0, 1, 1, 1]))
    np.testing.assert_array_equal(a.group_indices, [0, 2, 5])
    np.testing.assert_array_equal(a.puzzle_indices, np.arange(6))


def test_bad_dataset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="dataset.json: not found"):
        read_split(tmp_path, "train")
    write_split(tmp_path, "train", arrays(), Metadata(seq_len=5, vocab_size=7))
    (tmp_path / "train" / "all__labels.npy").write_bytes(b"not numpy")
    with pytest.raises(UserError, match="all__labels.npy: not a readable .npy file"):
        read_split(tmp_path, "train")
    (tmp_path / "train" / "dataset.json").write_text("{")
    with pytest.raises(UserError, match="malformed dataset.json"):
        read_split(tmp_path, "train")


META = Metadata(seq_len=5, vocab_size=7, num_puzzle_identifiers=4)


def _corrupt(tmp_path, name, value):
    write_split(tmp_path, "train", arrays(), META)
    if name == "dataset.json":
        (tmp_path / "train" / name).write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())
    else:
        np.save(tmp_path / "train" / f"all__{name}.npy", value)


@pytest.mark.parametrize("name, value, needle", [
    ("dataset.json", [1, 2], "dataset.json must be an object"),
    ("dataset.json", {"seq_len": 5, "vocab_size": 1}, "vocab_size must be an integer in 2.."),
    ("dataset.json", {"seq_len": 5, "vocab_size": float("nan")}, "vocab_size must be an integer"),
    ("dataset.json", {"seq_len": "5", "vocab_size": 7}, "seq_len must be an integer"),
    ("dataset.json", {"seq_len": 5, "vocab_size": 7, "num_puzzle_identifiers": 0}, "num_puzzle_identifiers must be"),
    ("dataset.json", b'{"seq_len": 5, "vocab_size": 7, "x": "\xff"}', "malformed dataset.json"),
    ("dataset.json", b"[" * 100000, "malformed dataset.json"),
    ("inputs", np.array(3, np.uint8), "inputs has 0 dimensions"),
    ("inputs", np.zeros((0, 5), np.uint8), "holds no examples"),
    ("inputs", np.full((10, 5), 9, np.uint8), "inputs hold token 9; the vocabulary is 0..6"),
    ("inputs", np.zeros((10, 5), bool), "inputs holds bool values"),
    ("labels", np.full((10, 5), 200, np.uint8), "labels hold 200"),
    ("labels", -np.ones((10, 5), np.int32), "labels hold -1"),
    ("puzzle_indices", np.array([0, 1, 3, 6, 10], np.float32), "puzzle_indices holds float32"),
    ("puzzle_indices", np.array([0, 1, 1, 6, 10], np.int32), "every puzzle must own at least one example"),
    ("group_indices", np.array([0, 2, 2, 4], np.int32), "every group must own at least one puzzle"),
    ("puzzle_identifiers", np.array([0, 3, 1, 9], np.int32), "puzzle_identifiers hold 9; dataset.json allows 0..3"),
    ("puzzle_identifiers", np.array([0, -3, 1, 2], np.int32), "puzzle_identifiers hold -3"),
])
def test_every_malformed_split_is_one_clear_error(tmp_path, name, value, needle):
    """The classes the fuzzing found (dataset.json not an object, 0-d or empty arrays, out-of-range tokens, labels
    and identifiers, bool/float arrays, empty groups, a vocabulary of 1 or NaN): each one UserError naming it."""
    _corrupt(tmp_path, name, value)
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        read_split(tmp_path, "train")


def test_the_ignore_label_may_lie_outside_the_vocabulary(tmp_path):
    write_split(tmp_path, "train", arrays(), Metadata(seq_len=5, vocab_size=7, ignore_label_id=-100,
                                                     num_puzzle_identifiers=4))
    labels = arrays().labels.astype(np.int32)
    labels[0, 0] = -100  # as a dataset written elsewhere with int32 labels may hold it
    np.save(tmp_path / "train" / "all__labels.npy", labels)
    assert read_split(tmp_path, "train")[0].labels[0, 0] == -100


def test_sampler_epochs_and_resume():
    a = arrays()
    s = Sampler(a, seed=3)
    first = s.take(3)
    rest = s.take(30)
    # epoch 0: one puzzle per group, all its examples; groups are {puzzles 0,1} and {2,3}
    epoch0 = np.concatenate([first, rest])[: len(s._epoch_order(0))]
    puzzles = {int(np.searchsorted(a.puzzle_indices, e, side="right") - 1) for e in epoch0}
    assert len(puzzles) == 2 and len(puzzles & {0, 1}) == 1 and len(puzzles & {2, 3}) == 1
    # a fresh sampler loaded from a saved position continues identically
    s2 = Sampler(a, seed=3)
    s2.take(3)
    state = s2.state_dict()
    s3 = Sampler(a, seed=3)
    s3.load_state_dict(state)
    np.testing.assert_array_equal(s3.take(30), rest)
    assert not np.array_equal(Sampler(a, seed=4).take(33), np.concatenate([first, rest]))


def test_an_explicit_null_size_in_dataset_json_is_refused(tmp_path):
    """Found by the field fuzzer: `"num_puzzle_identifiers": null` passed the check (as if absent) and failed later
    with a TypeError; null is refused, absence takes the default, and ignore_label_id may be null (all scored)."""
    x = np.ones((3, 4), np.uint8)
    write_split(tmp_path, "train", from_pairs(x, x), Metadata(seq_len=4, vocab_size=3))
    meta_file = tmp_path / "train" / "dataset.json"
    body = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**body, "num_puzzle_identifiers": None}))
    with pytest.raises(UserError, match="num_puzzle_identifiers must be an integer"):
        read_split(tmp_path, "train")
    meta_file.write_text(json.dumps({k: v for k, v in body.items() if k != "num_puzzle_identifiers"}))
    read_split(tmp_path, "train")
    meta_file.write_text(json.dumps({**body, "ignore_label_id": None}))
    assert read_split(tmp_path, "train")[1].ignore_label_id is None


def test_validation_at_the_exact_range_boundaries():
    """Each range check at its edge: the largest token, label and puzzle identifier allowed pass, one more is
    refused; a puzzle or group of exactly one entry passes, of none is refused; the sequence length is checked
    against dataset.json (one less or more refused)."""
    meta = Metadata(seq_len=5, vocab_size=7, num_puzzle_identifiers=4, ignore_label_id=None)

    def split(**change) -> PuzzleArrays:
        a = arrays()
        fields = {name: np.array(getattr(a, name)) for name in FIELDS}
        for name, edit in change.items():
            fields[name] = edit(fields[name])
        return PuzzleArrays(**fields)

    def at(value):
        def edit(x):
            x = x.astype(np.int32)
            x.flat[3] = value
            return x
        return edit

    for name, top in (("inputs", 6), ("labels", 6), ("puzzle_identifiers", 3)):
        split(**{name: at(top)}).validate("edge", meta)  # the largest allowed
        split(**{name: at(0)}).validate("edge", meta)  # the smallest allowed
        for bad in (top + 1, -1):
            with pytest.raises(UserError, match=f"{name} hold (token )?{bad}"):
                split(**{name: at(bad)}).validate("edge", meta)
    one = np.array([0, 1, 2, 3, 10], np.int32)  # puzzles of 1, 1, 1 and 7 examples
    split(puzzle_indices=lambda _: one).validate("edge", meta)
    with pytest.raises(UserError, match="at least one example"):
        split(puzzle_indices=lambda _: np.array([0, 1, 1, 3, 10], np.int32)).validate("edge", meta)
    split(group_indices=lambda _: np.array([0, 1, 2, 3, 4], np.int32)).validate("edge", meta)  # one puzzle each
    with pytest.raises(UserError, match="at least one puzzle"):
        split(group_indices=lambda _: np.array([0, 1, 1, 4], np.int32)).validate("edge", meta)
    for seq_len in (4, 6):
        with pytest.raises(UserError):
            split().validate("edge", Metadata(seq_len=seq_len, vocab_size=7, num_puzzle_identifiers=4))
