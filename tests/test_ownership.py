"""A run is owned by one process; what a killed process leaves is cleaned up, and nothing half-written survives:
the run lock, recovery of killed checkpoint writes, metrics cut back to the resumed step, restarting a run that
never saved, and kill -9 with a real second process."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ponder import UserError
from ponder.cli import main
from ponder.config import resolve
from ponder.run import LOCK, RunLock
from ponder.trainer import train
from helpers import TINY

FAST = [*TINY, "train.log_every=1"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def steps_logged(run_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_second_process_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(capsys, "train", "demo", *FAST, "train.steps=2", "--out", str(run_dir))[0] == 0
    lock = RunLock(run_dir)  # another owner (a separate open file: flock conflicts even inside one process)
    assert lock.acquire() == ""  # the finished run closed cleanly: no owner named
    try:
        code, _, err = run(capsys, "train", "--resume", str(run_dir), "train.steps=4")
        assert code == 2 and "in use by process " + str(os.getpid()) in err and len(err.strip().splitlines()) == 1
    finally:
        lock.release()
    assert run(capsys, "train", "--resume", str(run_dir), "train.steps=4")[0] == 0  # free again


def test_a_failed_start_leaves_nothing(tmp_path):
    with pytest.raises(UserError):
        train(resolve("demo", [*TINY, "train.device=cuda:7", "train.steps=2"]), tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_killed_saves_are_recovered_and_logs_cut_back(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(capsys, "train", "demo", *FAST, "train.steps=4", "train.checkpoint_every=2",
               "train.keep_checkpoints=3", "--out", str(run_dir))[0] == 0
    ckpt = run_dir / "ckpt"
    # what kill -9 leaves: a half-written folder, a re-save killed between its renames (step 4 moved aside), the
    # lines a process logged after its last checkpoint, and its name on the lock
    (ckpt / ".tmp-abc").mkdir()
    (ckpt / ".tmp-abc" / "model.safetensors").write_bytes(b"x" * 1000)
    os.rename(ckpt / "step_00000004", ckpt / ".old-step_00000004-4242")
    shutil.rmtree(ckpt / "step_00000002")  # so that resuming needs the put-back step 4
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n" + '{"step": 6, "lo')
    (run_dir / LOCK).write_text("process 99999999 on elsewhere since 2026-01-01 00:00:00\n")
    code, out, err = run(capsys, "train", "--resume", str(run_dir), "train.steps=6")
    assert code == 0 and "trained 6 steps" in out
    assert "last trained by process 99999999" in err and "(killed?)" in err
    assert "step_00000004: put back" in err and ".tmp-abc: removed (0.0 MB" in err
    assert "2 lines after step 4 dropped" in err
    assert sorted(p.name for p in ckpt.iterdir()) == ["step_00000004", "step_00000006"]
    assert steps_logged(run_dir) == [1, 2, 3, 4, 5, 6]  # each step once
    assert (run_dir / LOCK).read_text() == ""  # closed cleanly


def test_a_run_that_never_saved_starts_again(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(capsys, "train", "demo", *FAST, "train.steps=2", "--out", str(run_dir))[0] == 0
    shutil.rmtree(run_dir / "ckpt")  # as if killed before its first checkpoint
    code, out, err = run(capsys, "train", "demo", *FAST, "train.steps=2", "--out", str(run_dir))
    assert code == 0 and "stopped before its first checkpoint: starting it again" in err
    assert steps_logged(run_dir) == [1, 2]
    shutil.rmtree(run_dir / "ckpt")
    code, _, err = run(capsys, "train", "demo", *FAST, "data.sudoku.test_size=8", "train.steps=2", "--out",
                       str(run_dir))
    assert code == 2 and "with other data settings" in err  # its dataset was built from other settings
    code, out, err = run(capsys, "train", "--resume", str(run_dir), "train.steps=3")
    assert code == 0 and "training it from step 0" in err and "trained 3 steps" in out
    assert steps_logged(run_dir) == [1, 2, 3]


def test_kill_9_then_resume_equals_one_run(tmp_path, capsys):
    """A real second process: while it trains, the run is refused to anyone else; killed with SIGKILL at a random
    moment after its first checkpoint, the run resumes to the same final weights as one uninterrupted run, with each
    step logged once."""
    # threads pinned: the subprocess and this process must sum in the same order for the weights to be bit-equal
    args = [*FAST, "train.steps=40", "train.checkpoint_every=4", "train.keep_checkpoints=2", "train.threads=1"]
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ponder", "train", "demo", *args, "--out", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list((run_dir / "ckpt").glob("step_*")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        code, _, err = run(capsys, "train", "--resume", str(run_dir))
        assert code == 2 and f"in use by process {proc.pid}" in err
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    code, _, err = run(capsys, "train", "--resume", str(run_dir))
    assert code == 0, err
    assert not list((run_dir / "ckpt").glob(".*"))
    assert steps_logged(run_dir) == list(range(1, 41))
    assert run(capsys, "train", "demo", *args, "--out", str(tmp_path / "straight"))[0] == 0
    a, b = (load_file(str(d / "ckpt" / "step_00000040" / "model.safetensors")) for d in (run_dir, tmp_path / "straight"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


# ---------------------------------------------------------------------------------------------------------------------
# bad checkpoints, file-system errors, a failed dataset build


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Finished 2-step runs (checkpoints at steps 1 and 2): a and b of different model sizes, c as a with another
    seed (the same model and batch size: only its run id tells its checkpoints from a's)."""
    root = tmp_path_factory.mktemp("runs")
    for name, hidden, seed in (("a", 32, 0), ("b", 48, 0), ("c", 32, 1)):
        assert main(["train", "demo", *FAST, "train.steps=2", "train.checkpoint_every=1", f"model.hidden={hidden}",
                     f"train.seed={seed}", "--out", str(root / name)]) == 0
    return root


def rehash(ckpt: Path) -> None:
    """meta.json's sha256 brought up to date with the files (a checkpoint edited on purpose, not corrupted)."""
    from ponder.checkpoint import HASHED, sha256

    meta = json.loads((ckpt / "meta.json").read_text())
    meta["sha256"] = {name: sha256(ckpt / name) for name in HASHED if (ckpt / name).exists()}
    (ckpt / "meta.json").write_text(json.dumps(meta))


def one_line(err: str, needle: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ponder: error:") and needle in lines[0], err


def test_checkpoints_that_do_not_fit_are_one_line_errors(two_runs, tmp_path, capsys):
    from safetensors.torch import save_file

    run_dir = tmp_path / "a"
    shutil.copytree(two_runs / "a", run_dir)
    ckpt = run_dir / "ckpt" / "step_00000002"
    good = load_file(str(ckpt / "model.safetensors"))
    for name, tensors, needle in (
            ("missing", {k: v for k, v in good.items() if "lm_head" not in k}, "no tensor for"),
            ("extra", {**good, "stray.weight": good[next(iter(good))].clone()}, "tensor stray.weight has no place"),
            ("shape", {k: (v[:1] if v.ndim and v.shape[0] > 1 else v) for k, v in good.items()}, "in the checkpoint but")):
        for f in ("model.safetensors", "ema.safetensors"):
            save_file(tensors, str(ckpt / f))
        rehash(ckpt)
        code, _, err = run(capsys, "eval", str(run_dir), "--pictures", "0")
        assert code == 2, name
        one_line(err, needle)
        code, _, err = run(capsys, "train", "--resume", str(run_dir), "train.steps=3")
        assert code == 2, name
        one_line(err, needle)
    shutil.copyfile(two_runs / "a" / "ckpt" / "step_00000002" / "model.safetensors", ckpt / "model.safetensors")
    shutil.copyfile(two_runs / "a" / "ckpt" / "step_00000002" / "ema.safetensors", ckpt / "ema.safetensors")
    import torch

    state = torch.load(ckpt / "state.pt", weights_only=True)
    del state["sampler"]
    torch.save(state, ckpt / "state.pt")
    rehash(ckpt)
    code, _, err = run(capsys, "train", "--resume", str(run_dir), "train.steps=3")
    assert code == 2
    one_line(err, "state.pt: does not fit this run (KeyError: 'sampler')")
    (ckpt / "meta.json").write_text("{not json")
    code, _, err = run(capsys, "eval", str(run_dir), "--pictures", "0")
    assert code == 2
    one_line(err, "meta.json: unreadable")


def test_a_foreign_checkpoint_is_not_adopted(two_runs, tmp_path, capsys):
    """A checkpoint folder of another run copied in as a later step is refused, naming what tells it apart (another
    model: the config; the same model and batch size: the run id); a folder whose name is not its step is refused;
    nothing is deleted or rewritten."""
    for other, rename, needle in (
            ("b", 9, "its config differs from the run's config.yaml in model.hidden"),
            ("c", 9, "a checkpoint of another run"),
            ("a", None, "its name says step 99999999 but meta.json says step 2")):
        run_dir = tmp_path / f"a-{other}"
        shutil.copytree(two_runs / "a", run_dir)
        name = f"step_{rename:08d}" if rename else "step_99999999"
        shutil.copytree(two_runs / other / "ckpt" / "step_00000002", run_dir / "ckpt" / name)
        if rename:
            meta = json.loads((run_dir / "ckpt" / name / "meta.json").read_text())
            if other == "b":  # as a checkpoint of an earlier version (no run id): its config tells it apart
                del meta["run_id"]
            (run_dir / "ckpt" / name / "meta.json").write_text(json.dumps({**meta, "step": rename}))
        before = {p.name: sorted(q.name for q in p.iterdir()) for p in (run_dir / "ckpt").iterdir()}
        config = (run_dir / "config.yaml").read_text()
        code, _, err = run(capsys, "train", "--resume", str(run_dir), "train.steps=12")
        assert code == 2, other
        one_line(err, needle)
        assert {p.name: sorted(q.name for q in p.iterdir()) for p in (run_dir / "ckpt").iterdir()} == before
        assert (run_dir / "config.yaml").read_text() == config


def test_a_flipped_bit_in_a_checkpoint_is_named(two_runs, tmp_path, capsys):
    """One flipped bit inside a tensor of model.safetensors, ema.safetensors or state.pt (or in config.yaml): eval,
    solve and resume each stop with one line naming the corrupt file (sha256 recorded at save); nothing changes."""
    for name in ("ema.safetensors", "model.safetensors", "state.pt", "config.yaml"):
        run_dir = tmp_path / name
        shutil.copytree(two_runs / "a", run_dir)
        path = run_dir / "ckpt" / "step_00000002" / name
        data = bytearray(path.read_bytes())
        data[len(data) - 7] ^= 0x40  # inside the last tensor's bytes (an exponent bit of a float32 weight)
        path.write_bytes(bytes(data))
        resume = ["train", "--resume", str(run_dir), "train.steps=3"]
        evaluate, solve = ["eval", str(run_dir), "--pictures", "0"], ["solve", str(run_dir), "1.3...2.....4..."]
        commands = {"ema.safetensors": [evaluate, solve],  # what each command reads: eval and solve the EMA weights,
                    "model.safetensors": [resume, [*evaluate, "--raw"], [*solve, "--raw"]],  # resume the raw ones
                    "state.pt": [resume], "config.yaml": [resume, evaluate, solve]}[name]
        for command in commands:
            code, _, err = run(capsys, *command)
            assert code == 2, (name, command, err)
            one_line(err, f"{name}: corrupt")
        assert path.read_bytes() == bytes(data)


def test_file_system_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out, needle, status in ((tmp_path / "file", "is not a folder", 2),
                                (tmp_path / ("x" * 300), "File name too long", 2)):
        code, _, err = run(capsys, "train", "demo", *FAST, "train.steps=1", "--out", str(out))
        assert code == status, err
        one_line(err, needle)
    import errno
    import tempfile

    real = tempfile.mkdtemp

    def read_only(*a, **k):  # as on a read-only file system (root writes into 0555 folders, so it is simulated)
        raise OSError(errno.EROFS, "Read-only file system", k.get("dir", "?"))

    tempfile.mkdtemp = read_only
    try:
        code, _, err = run(capsys, "data", "sudoku", "--out", str(tmp_path / "d"), "--size", "4")
    finally:
        tempfile.mkdtemp = real
    assert code == 2
    one_line(err, "Read-only file system")
    assert not (tmp_path / "d").exists()


def test_a_failed_dataset_build_leaves_nothing(tmp_path, capsys, monkeypatch):
    from ponder.tasks.sudoku import SudokuTask

    real = SudokuTask.build

    def build(self, split, seed):
        if split == "test":
            raise OSError(28, "No space left on device", "somewhere")
        return real(self, split, seed)

    monkeypatch.setattr(SudokuTask, "build", build)
    out = tmp_path / "d"
    args = ["data", "sudoku", "--out", str(out), "--size", "4", "--train-size", "16", "--test-size", "8"]
    code, _, err = run(capsys, *args)
    assert code == 1 and "No space left on device" in err  # a full disk: status 1, one line
    assert list(tmp_path.iterdir()) == []  # no half dataset, no temporary folder
    monkeypatch.setattr(SudokuTask, "build", real)
    assert run(capsys, *args)[0] == 0  # and the retry is not refused
    assert sorted(p.name for p in out.iterdir()) == [".lock", ".ponder", "identifiers.json", "test", "train"]


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    import ponder.checkpoint as C

    real, calls = C.torch.save, {"n": 0}

    def save(*a, **k):  # the second checkpoint's state.pt hits a full disk halfway
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device", str(a[1]))
        return real(*a, **k)

    monkeypatch.setattr(C.torch, "save", save)
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", "demo", *FAST, "train.steps=6", "train.checkpoint_every=2", "--out",
                       str(run_dir))
    assert code == 1 and "No space left on device" in err and "Traceback" not in err
    assert [p.name for p in (run_dir / "ckpt").iterdir()] == ["step_00000002"]  # intact, and no temporary folder
    monkeypatch.setattr(C.torch, "save", real)
    assert run(capsys, "train", "--resume", str(run_dir))[0] == 0  # and it resumes from there


def test_pruning_keeps_the_newest_sane_checkpoint_and_divergence_names_it(tmp_path):
    import torch

    from ponder import checkpoint
    from ponder.run import safe_point

    cfg = resolve("demo", [])
    for step, scale in ((1, 1.0), (2, 1.5), (3, 50.0), (4, 400.0)):  # weights blowing up from step 3 on
        checkpoint.save(tmp_path, step, {"w": torch.full((4,), scale)}, None, {}, cfg, {"metrics": {"loss": 1.0}},
                        keep=2)
    kept = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
    assert kept == ["step_00000002", "step_00000003", "step_00000004"]  # step 2 survives the keep-2 pruning
    assert checkpoint.newest_sane(tmp_path, 10.0).name == "step_00000002"
    text = safe_point(tmp_path, cfg.train, checkpoint.list_checkpoints(tmp_path))
    assert "the newest sane checkpoint is" in text and "step_00000002" in text and "step_00000003, step_00000004" in text
    assert checkpoint.load_meta(checkpoint.list_checkpoints(tmp_path)[-1])["weight_rms"] == pytest.approx(400.0)


def test_a_slowly_diverging_run_keeps_its_reference_at_the_first_checkpoint(tmp_path):
    """Weights growing x3 per checkpoint with keep 2: pruning removes the first checkpoint early, but "sane" stays
    measured against it (recorded in RUN/.ponder), so the checkpoint recommended after a divergence is one within
    sane_weight_ratio (10) of the start - step 3 (RMS 9) - never a later one measured against a pruned-forward
    reference (step 5 at RMS 81 would pass against step 3's 9)."""
    import torch

    from ponder import checkpoint
    from ponder.run import safe_point

    cfg = resolve("demo", [])
    for step in range(1, 9):
        checkpoint.save(tmp_path, step, {"w": torch.full((4,), 3.0 ** (step - 1))}, None, {}, cfg,
                        {"metrics": {"loss": 1.0}}, keep=2)
    assert checkpoint.newest_sane(tmp_path, 10.0).name == "step_00000003"
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_00000003", "step_00000007",
                                                                      "step_00000008"]
    text = safe_point(tmp_path, cfg.train, checkpoint.list_checkpoints(tmp_path))
    assert "the newest sane checkpoint is" in text and "step_00000003" in text
    first = json.loads((tmp_path / ".ponder").read_text())["first"]
    assert first == {"step": 1, "weight_rms": 1.0}


def test_a_kill_while_an_old_checkpoint_is_pruned_leaves_no_half_step(tmp_path, capsys, monkeypatch):
    """Killed halfway through deleting an old checkpoint (its meta.json already gone, other files left): the step
    folder had been renamed out of the step names first, so resuming finds only whole checkpoints, and the start
    clears what is left."""
    import ponder.checkpoint as C

    class Killed(BaseException):
        pass

    real = C.shutil.rmtree

    def rmtree(path, *a, **k):
        path = Path(path)
        if "step_" in path.name and not path.name.startswith((".tmp", ".old")) and (path / "meta.json").exists():
            (path / "meta.json").unlink()  # the deletion under way, then the process dies
            raise Killed
        return real(path, *a, **k)

    monkeypatch.setattr(C.shutil, "rmtree", rmtree)
    run_dir = tmp_path / "run"
    with pytest.raises(Killed):
        main(["train", "demo", *FAST, "train.steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=1",
              "--out", str(run_dir)])
    capsys.readouterr()
    monkeypatch.setattr(C.shutil, "rmtree", real)
    (run_dir / ".lock").write_text("")  # the lock a killed process leaves (the OS released it)
    code, _, err = run(capsys, "train", "--resume", str(run_dir))
    assert code == 0, err
    assert not list((run_dir / "ckpt").glob(".*")) and steps_logged(run_dir) == list(range(1, 7))
