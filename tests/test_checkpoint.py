"""Checkpoints: written to a temporary folder and renamed into place (a failure midway leaves the previous one the
newest and nothing half-written), and a training state that carries code is refused without running it."""

import json
from pathlib import Path

import pytest
import torch

from ponder import UserError, checkpoint
from ponder.config import Config


def save(run: Path, step: int, **state):
    return checkpoint.save(run, step, {"w": torch.full((3,), float(step))}, None, {"step": step, **state}, Config(),
                           {"params": 3})


def test_a_failure_midway_keeps_the_previous_checkpoint_newest(tmp_path, monkeypatch):
    first = save(tmp_path, 1)

    def disk_full(*args, **kwargs):  # model.safetensors is written, then the training state fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(OSError):
        save(tmp_path, 2)
    assert checkpoint.list_checkpoints(tmp_path) == [first] and checkpoint.find(tmp_path) == first
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_00000001"]  # no partial or temp folder
    assert checkpoint.load_state(first)["step"] == 1
    assert torch.equal(checkpoint.load_weights(first)["w"], torch.full((3,), 1.0))


def test_a_training_state_carrying_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    ckpt = save(tmp_path, 1)
    torch.save({"step": 1, "optimizer": Payload()}, ckpt / "state.pt")
    meta = json.loads((ckpt / "meta.json").read_text())  # its sha256 recorded too: a crafted file, not a corrupt one
    meta["sha256"]["state.pt"] = checkpoint.sha256(ckpt / "state.pt")
    (ckpt / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="not a readable training state"):
        checkpoint.load_state(ckpt)
    assert not marker.exists()


def test_checkpoints_and_atomic_files_get_the_users_usual_permissions(tmp_path):
    """Not the owner-only 0600 / 0700 of temporary files: 0666 / 0777 less the umask (colleagues can read a run)."""
    import os
    import stat

    from ponder.files import atomic_write_text

    old = os.umask(0o022)
    try:
        ckpt = save(tmp_path, 1)
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o755
    for f in [*ckpt.iterdir(), tmp_path / "config.yaml"]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_a_config_that_does_not_describe_its_weights_is_refused_before_allocation(tmp_path):
    """A damaged config.yaml asking for a model of width 65,536 and 64 layers (within the config's ranges; about 3 x
    10^12 weights, far beyond memory) beside the real weights: one line naming a tensor, within seconds, because the
    model is first built on the meta device."""
    import time

    import yaml

    from helpers import TINY
    from ponder.cli import main
    from ponder.evaluate import load_model

    assert main(["train", "demo", *TINY, "train.steps=1", "--out", str(tmp_path / "run")]) == 0
    ckpt = checkpoint.find(tmp_path / "run")
    body = yaml.safe_load((ckpt / "config.yaml").read_text())
    body["model"]["hidden"], body["model"]["n_layers"] = 65536, 64
    (ckpt / "config.yaml").write_text(yaml.safe_dump(body))
    meta = json.loads((ckpt / "meta.json").read_text())  # its sha256 recorded too: edited, not corrupted
    meta["sha256"]["config.yaml"] = checkpoint.sha256(ckpt / "config.yaml")
    (ckpt / "meta.json").write_text(json.dumps(meta))
    t = time.perf_counter()
    with pytest.raises(UserError, match="no tensor for blocks.2"):  # names the first tensor that does not fit
        load_model(ckpt)
    assert time.perf_counter() - t < 5


@pytest.mark.parametrize("key,value", [("step", -1), ("step", 2**64), ("step", 3.5), ("step", True),
                                       ("elapsed", float("nan")), ("elapsed", float("inf")), ("examples_seen", -5)])
def test_a_training_state_with_an_out_of_range_counter_is_refused(tmp_path, key, value):
    torch.save({"step": 3, "elapsed": 1.5, "examples_seen": 24, key: value}, tmp_path / "state.pt")
    with pytest.raises(UserError, match=f"state.pt: {key} must be a number in 0.."):
        checkpoint.load_state(tmp_path)
    torch.save({"step": 3, "elapsed": 1.5, "examples_seen": 24}, tmp_path / "state.pt")
    assert checkpoint.load_state(tmp_path)["step"] == 3


def test_a_checkpoint_is_never_written_in_place(tmp_path, monkeypatch):
    """Every file of a checkpoint is written outside its final folder (a temporary sibling renamed into place), for
    a new step and for a step saved again: at no moment does a step folder hold a half-written file, and a re-save
    leaves the previous copy whole until the new one is complete."""
    import ponder.checkpoint as C

    written = []
    real_save_file, real_torch_save = C.save_file, C.torch.save

    def save_file(tensors, path, *a, **k):
        written.append(Path(path))
        return real_save_file(tensors, path, *a, **k)

    def torch_save(obj, path, *a, **k):
        written.append(Path(path))
        return real_torch_save(obj, path, *a, **k)

    monkeypatch.setattr(C, "save_file", save_file)
    monkeypatch.setattr(C.torch, "save", torch_save)
    cfg = Config()
    for _ in range(2):  # a new step, then the same step again
        final = C.step_path(tmp_path, 1)
        before = sorted(p.name for p in final.iterdir()) if final.exists() else None
        written.clear()
        C.save(tmp_path, 1, {"w": torch.ones(3)}, {"w": torch.ones(3)}, {"step": 1}, cfg, {})
        assert len(written) == 3 and all(final not in p.parents for p in written), written
        assert sorted(p.name for p in final.iterdir()) == ["config.yaml", "ema.safetensors", "meta.json",
                                                           "model.safetensors", "state.pt"]
        assert before is None or before == sorted(p.name for p in final.iterdir())
