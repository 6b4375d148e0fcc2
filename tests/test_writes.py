"""Where ponder writes: never through a symbolic link, never over what it did not make, ownership before every
decision (`ponder.files`: `Output`, `entry`, `locked`, `refuse_link`). Each test plants what a user's files or a
mistake would put there and checks that the command stops with one line (status 2) and that nothing of the user's
changed."""

from __future__ import annotations

import json
import os

import pytest

from ponder import UserError
from ponder.cli import main
from ponder.config import resolve
from ponder.files import locked
from ponder.trainer import train
from helpers import TINY, run
from helpers import one_line_error as one_line

DATA = ["data", "sudoku", "--size", "4", "--train-size", "16", "--test-size", "8"]


def snapshot(folder) -> dict:
    """Every file under `folder` (links not followed) with its bytes, every link with its target."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    out[rel] = f.read()
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    assert main(["train", "demo", *TINY, "train.steps=2", "--out", str(root / "run")]) == 0
    return root / "run"


# ---------------------------------------------------------------------------------------------------------------------
# ponder data


def test_data_never_deletes_a_folder_it_did_not_make(tmp_path, capsys):
    """A project folder holding train/, test/ and identifiers.json of its own (no dataset.json): refused without
    --force, and with --force too (those names are not ponder's); through a symlinked folder as well."""
    project = tmp_path / "project"
    for name in ("train/notes.txt", "test/results.csv", "identifiers.json", "README"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(f"the user's {name}\n")
    before = snapshot(project)
    code, _, err = run(capsys, *DATA, "--out", str(project))
    assert code == 2
    one_line(err, "a folder ponder did not make")
    code, _, err = run(capsys, *DATA, "--out", str(project), "--force")
    assert code == 2
    one_line(err, "not written by ponder")
    (tmp_path / "link").symlink_to(project)
    code, _, err = run(capsys, *DATA, "--out", str(tmp_path / "link"), "--force")
    assert code == 2
    one_line(err, "is a symbolic link")
    assert snapshot(project) == before


def test_data_force_writes_beside_the_users_files_and_rebuilds_its_own(tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    assert run(capsys, *DATA, "--out", str(folder), "--force")[0] == 0
    assert (folder / "mine.txt").read_text() == "keep me" and (folder / "train" / "dataset.json").exists()
    code, _, err = run(capsys, *DATA, "--out", str(folder))
    assert code == 2
    one_line(err, "already holds a dataset")
    assert run(capsys, *DATA, "--out", str(folder), "--force", "--seed", "3")[0] == 0  # its own: rebuilt in place
    assert (folder / "mine.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(capsys, *DATA, "--out", str(empty))[0] == 0  # an empty folder is taken as it is


def test_data_takes_its_lock_before_it_looks(tmp_path, capsys):
    """A second `ponder data` on an --out another process is building: refused, naming it (the window between the
    check and the build forced by holding the lock here)."""
    out = tmp_path / "d"
    with locked(out, "dataset") as f:
        f.write("process 4242 on elsewhere since now\n")
        f.flush()
        code, _, err = run(capsys, *DATA, "--out", str(out))
    assert code == 2
    one_line(err, "in use by process 4242")
    assert not (out / "train").exists()


# ---------------------------------------------------------------------------------------------------------------------
# ponder train


def test_a_planted_lock_link_is_refused_and_its_target_untouched(finished_run, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\nsecond line\n")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".lock").symlink_to(victim)
    code, _, err = run(capsys, "train", "demo", *TINY, "train.steps=1", "--out", str(fresh))
    assert code == 2
    one_line(err, ".lock: is a symbolic link")
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(finished_run, resumed, symlinks=True)
    (resumed / ".lock").unlink()
    (resumed / ".lock").symlink_to(victim)
    code, _, err = run(capsys, "train", "--resume", str(resumed), "train.steps=3")
    assert code == 2
    one_line(err, ".lock: is a symbolic link")
    assert victim.read_text() == "precious\nsecond line\n"


def test_run_logs_are_never_written_through_links(finished_run, tmp_path, capsys):
    import shutil

    for name in ("machine.jsonl", "metrics.jsonl", "config.yaml"):
        victim = tmp_path / f"victim-{name}"  # what the link points to reads as the real file (read, never written)
        shutil.copyfile(finished_run / name, victim)
        before = victim.read_bytes()
        run_dir = tmp_path / name
        shutil.copytree(finished_run, run_dir, symlinks=True)
        (run_dir / name).unlink()
        (run_dir / name).symlink_to(victim)
        code, _, err = run(capsys, "train", "--resume", str(run_dir), "train.steps=3")
        assert code == 2, name
        one_line(err, f"{name}: is a symbolic link")
        assert victim.read_bytes() == before
    out = tmp_path / "linked-run"
    out.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    code, _, err = run(capsys, "train", "demo", *TINY, "train.steps=1", "--out", str(out))
    assert code == 2
    one_line(err, "is a symbolic link")
    assert not (tmp_path / "elsewhere").exists()


def test_train_decides_fresh_or_not_only_once_it_owns_the_folder(finished_run, tmp_path):
    """The CLI's early check passed, then another process trained the folder (forced: the trainer is called on a
    finished run as if the check had passed before): the trainer, holding the lock, refuses; nothing changes."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    before = snapshot(run_dir)
    with pytest.raises(UserError, match="already holds a run"):
        train(resolve("demo", [*TINY, "train.steps=2"]), run_dir, progress=False)
    assert snapshot(run_dir) == before


# ---------------------------------------------------------------------------------------------------------------------
# ponder eval


def test_eval_never_writes_through_links_or_into_a_users_folder(finished_run, tmp_path, capsys):
    victim = tmp_path / "victim.json"
    victim.write_text('{"precious": true}')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out-link").symlink_to(elsewhere)
    code, _, err = run(capsys, "eval", str(finished_run), "--pictures", "0", "--out", str(tmp_path / "out-link"))
    assert code == 2
    one_line(err, "is a symbolic link")
    assert list(elsewhere.iterdir()) == []
    out = tmp_path / "out"
    assert run(capsys, "eval", str(finished_run), "--pictures", "0", "--out", str(out))[0] == 0
    for name in ("results.json", "scaling.png"):
        (out / name).unlink()
        (out / name).symlink_to(victim)
        code, _, err = run(capsys, "eval", str(finished_run), "--pictures", "0", "--out", str(out))
        assert code == 2, name
        one_line(err, f"{name}: is a symbolic link")
        (out / name).unlink()
    assert victim.read_text() == '{"precious": true}'
    users = tmp_path / "users"
    users.mkdir()
    (users / "results.json").write_text("the user's")
    code, _, err = run(capsys, "eval", str(finished_run), "--pictures", "0", "--out", str(users))
    assert code == 2
    one_line(err, "a folder ponder did not make")
    code, _, err = run(capsys, "eval", str(finished_run), "--pictures", "0", "--out", str(users), "--force")
    assert code == 2
    one_line(err, "results.json: not written by ponder")
    assert (users / "results.json").read_text() == "the user's"
    run_eval = finished_run / "eval"
    if run_eval.exists():
        import shutil

        shutil.rmtree(run_eval)
    (finished_run / "eval").symlink_to(elsewhere)  # the run's own evaluation folder planted as a link
    try:
        code, _, err = run(capsys, "eval", str(finished_run), "--pictures", "0")
    finally:
        (finished_run / "eval").unlink()
    assert code == 2
    one_line(err, "is a symbolic link")
    assert list(elsewhere.iterdir()) == []


def test_solve_png_is_never_written_through_a_link(finished_run, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "s.png").symlink_to(victim)
    code, _, err = run(capsys, "solve", str(finished_run), "1.3...2.....4...", "--png", str(tmp_path / "s.png"))
    assert code == 2
    one_line(err, "is a symbolic link")
    assert victim.read_text() == "precious"
    assert run(capsys, "solve", str(finished_run), "1.3...2.....4...", "--png", str(tmp_path / "t.png"))[0] == 0
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_folder_marker_names_what_ponder_wrote(tmp_path, capsys):
    out = tmp_path / "d"
    assert run(capsys, *DATA, "--out", str(out))[0] == 0
    marker = json.loads((out / ".ponder").read_text())
    assert marker["kind"] == "dataset" and {"train", "test", "identifiers.json"} <= set(marker["made"])


# ---------------------------------------------------------------------------------------------------------------------
# a full disk, for real (a small tmpfs; skipped where mounting one is not allowed)


@pytest.fixture
def small_disk(tmp_path):
    import subprocess

    mounts = []

    def make(kilobytes: int):
        d = tmp_path / f"disk-{len(mounts)}"
        d.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(d)],
                              capture_output=True)
        if done.returncode:
            pytest.skip("cannot mount a small tmpfs here (needs root)")
        mounts.append(d)
        return d

    yield make
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _size(path) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)




def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, small_disk, capsys):
    """torch.save (RuntimeError "unexpected pos"), safetensors (SafetensorError) and numpy ("N requested and M
    written") each say "disk full" their own way: every command says it in one line, status 1, and keeps what was
    good: the previous checkpoint, no half file under a real name, no temporary file."""
    args = [*TINY, "train.steps=4", "train.checkpoint_every=2", "train.keep_checkpoints=5"]
    probe = tmp_path / "probe"
    assert run(capsys, "train", "demo", *args, "--out", str(probe))[0] == 0
    one = _size(probe / "ckpt" / "step_00000002")
    rest = _size(probe) - _size(probe / "ckpt") - _size(probe / "tb") - _size(probe / "report.html")
    disk = small_disk((rest + one + one // 2) // 1024 + 64)  # room for the first checkpoint, not the second
    code, _, err = run(capsys, "train", "demo", *args, "train.log_every=100", "--out", str(disk / "run"))
    assert code == 1, err
    lines = [line for line in err.strip().splitlines() if line.startswith("ponder")]
    assert lines == [lines[0]] and "No space left on device" in lines[0] and "Traceback" not in err
    assert sorted(p.name for p in (disk / "run" / "ckpt").iterdir()) == ["step_00000002"]
    from ponder.checkpoint import load_weights

    assert load_weights(disk / "run" / "ckpt" / "step_00000002")  # complete, and its sha256 checks

    full = small_disk(48)  # a dataset bigger than the disk: numpy's short write
    code, _, err = run(capsys, *DATA[:2], "--size", "4", "--train-size", "3000", "--test-size", "8", "--out",
                       str(full / "d"))
    assert code == 1 and "No space left on device" in err and len(err.strip().splitlines()) == 1, err
    assert list(full.iterdir()) == []  # nothing half-built left


# ---------------------------------------------------------------------------------------------------------------------
# Ctrl-C at any moment names what exists


def test_ctrl_c_at_start_up_or_during_the_final_save_names_what_exists(tmp_path, capsys, monkeypatch):
    import ponder.checkpoint as C
    import ponder.trainer as T

    real_build = T.build_model

    def interrupted_build(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "build_model", interrupted_build)
    code, _, err = run(capsys, "train", "demo", *TINY, "train.steps=4", "--out", str(tmp_path / "a"))
    assert code == 130 and err.strip().splitlines()[-1].startswith("ponder: interrupted;") and \
        "holds no checkpoint yet" in err, err
    monkeypatch.setattr(T, "build_model", real_build)

    real_save, calls = C.save, {"n": 0}

    def save(*a, **k):  # a second Ctrl-C during the final save
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_save(*a, **k)

    monkeypatch.setattr(C, "save", save)
    code, _, err = run(capsys, "train", "demo", *TINY, "train.steps=4", "train.checkpoint_every=2", "--out",
                       str(tmp_path / "b"))
    assert code == 130 and "the newest checkpoint is" in err and "step_00000002" in err, err
    code, _, err = run(capsys, "eval", str(tmp_path / "b"), "--pictures", "0", "eval.max_examples=-1")
    assert code == 2  # (a wrong value: not an interrupt)
    monkeypatch.setattr("ponder.evaluate.evaluate_model", interrupted_build)
    code, _, err = run(capsys, "eval", str(tmp_path / "b"), "--pictures", "0")
    assert code == 130 and "nothing half-written is left" in err and err.strip() != "ponder:", err


def test_a_picture_cut_by_a_full_disk_is_never_left_under_its_name(finished_run, tmp_path, capsys, monkeypatch):
    """matplotlib writing a PNG when the disk fills (half the bytes written, then ENOSPC): `ponder eval` stops with
    one line, status 1, and no half picture is left under a real name (pictures are written to a temporary file and
    renamed)."""
    import errno
    import shutil

    from matplotlib.figure import Figure

    real = Figure.savefig

    def savefig(self, target, *a, **k):
        import io

        buf = io.BytesIO()
        real(self, buf, *a, **{**k, "format": "png"})
        data = buf.getvalue()
        if hasattr(target, "write"):
            target.write(data[: len(data) // 2])
        else:
            with open(target, "wb") as f:
                f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    monkeypatch.setattr(Figure, "savefig", savefig)
    code, _, err = run(capsys, "eval", str(run_dir), "--pictures", "1")
    assert code == 1 and "No space left on device" in err and len(err.strip().splitlines()) == 1, err
    assert not list(run_dir.rglob("*.png")) and not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------------------------------
# every command with an --out: a link refused, a folder ponder did not make refused (unless --force)


def _out_commands(finished_run):
    budget = ["--steps", "1", *[f"--set={o}" for o in TINY]]
    return {
        "data": [*DATA],
        "train": ["train", "demo", *TINY, "train.steps=1"],
        "demo": ["demo", *TINY, "train.steps=1"],
        "eval": ["eval", str(finished_run), "--pictures", "0"],
        "import": ["import", str(finished_run / "nothing.pt"), "--family", "trm", "--preset", "demo"],
        "compare": ["compare", *budget, "a=demo"],
        "study": ["study", "ca1d", "--models", "lstm", "--regimes", "fixed", "--steps", "1"],
    }


@pytest.mark.parametrize("command", ["data", "train", "demo", "eval", "import", "compare", "study"])
def test_every_out_refuses_a_link_and_a_folder_it_did_not_make(command, finished_run, tmp_path, capsys):
    argv = _out_commands(finished_run)[command]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere)
    code, _, err = run(capsys, *argv, "--out", str(tmp_path / "link"))
    assert code == 2, err
    one_line(err, "is a symbolic link")
    assert list(elsewhere.iterdir()) == []
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    code, _, err = run(capsys, *argv, "--out", str(users))
    assert code == 2, err
    one_line(err, "a folder ponder did not make")
    assert [p.name for p in users.iterdir()] == ["notes.txt"] and (users / "notes.txt").read_text() == "mine"


def test_report_never_writes_its_page_through_a_link(finished_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    victim = tmp_path / "victim.html"
    victim.write_text("mine")
    (run_dir / "report.html").unlink(missing_ok=True)
    (run_dir / "report.html").symlink_to(victim)
    code, _, err = run(capsys, "report", str(run_dir))
    assert code == 2
    one_line(err, "report.html: is a symbolic link")
    assert victim.read_text() == "mine"
