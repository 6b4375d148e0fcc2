"""`ponder solve`: the user's own puzzle read by its task (every malformed input a one-line error, exit 2), answered
by a trained model with its steps and halting confidence, the trace and the picture."""

import numpy as np
import pytest

from ponder import UserError
from ponder.config import ArcConfig, Ca1dConfig, MazeConfig, SudokuConfig
from ponder.tasks.arc import ArcTask, encode
from ponder.tasks.ca1d import Ca1dTask
from ponder.tasks.maze import MazeTask
from ponder.tasks.sudoku import SudokuTask
from helpers import TINY, one_line_error, run


def test_sudoku_text_in_any_usual_form():
    task = SudokuTask(SudokuConfig(size=4))
    want = np.array([2, 1, 4, 1, 1, 1, 3, 1, 1, 1, 1, 1, 5, 1, 1, 1])  # tokens: digit + 1, blank 1
    plain = "1.3." "..2." "...." "4..."
    drawn = task.render(want)  # the puzzle as `render` draws it, box rules and all
    for text in (plain, plain.replace(".", "0"), "1 . 3 .\n. . 2 .\n. . . .\n4 . . .\n", drawn):
        assert np.array_equal(task.parse(text), want), text


@pytest.mark.parametrize("text, needle", [
    ("1.3...2.....4..", "16 cells"),
    ("1.3...2..x..4...", "'x'"),
    ("1.1...2.....4...", "row 1 has the digit 1 twice"),
    ("1...1...........", "column 1 has the digit 1 twice"),
    ("5...............", "'5'"),
])
def test_malformed_sudoku(text, needle):
    with pytest.raises(UserError, match=needle):
        SudokuTask(SudokuConfig(size=4)).parse(text)


def test_maze_text_plain_framed_or_with_trailing_spaces_dropped():
    task = MazeTask(MazeConfig(size=4))
    want = task.parse("#S #\n#  #\n# G#\n####")
    assert np.array_equal(task.parse(task.render(want)), want)  # the frame `render` draws
    assert np.array_equal(task.parse("#S #\n#  #\n# G#\n####\n"), want)
    open_end = task.parse("#S  \n#   \n# G \n####")
    assert np.array_equal(task.parse("#S\n#\n# G\n####"), open_end)  # trailing open cells an editor dropped
    for text, needle in (("#S #\n#  #\n####", "4 lines"), ("#S #\n#  #\n# S#\n####", "2 'S' cells"),
                         ("#S #\n#  #\n#  #\n####", "0 'G' cells"), ("#Sx#\n#  #\n# G#\n####", "'x'"),
                         ("#So#\n#  #\n# G#\n####", "'o'")):
        with pytest.raises(UserError, match=needle):
            task.parse(text)


def test_ca1d_orbit_text():
    task = Ca1dTask(Ca1dConfig(radius=1, width=4, context=2, k=0, max_k=3, layout="causal", train_rules=100,
                               test_rules=100))
    x = task.parse("0101\n1010", k=2)
    assert np.array_equal(task.grid(x)[:2] - 1, [[0, 1, 0, 1], [1, 0, 1, 0]]) and task.steps_ahead(x[None])[0] == 2
    assert np.array_equal(task.parse("s_0  .#.#\ns_1  #.#.", k=2), x)  # as `render` writes states
    for text, k, needle in (("0101\n1010", None, "say which"), ("0101\n1010", 5, "not 5"), ("0101", 1, "2 given"),
                            ("01010\n1010", 1, "4 cells"), ("0102\n1010", 1, "'0102'")):
        with pytest.raises(UserError, match=needle):
            task.parse(text, k=k)


def test_solve_from_the_cli(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(capsys, "train", "demo", *TINY, "train.steps=4", "--out", str(run_dir))[0] == 0
    puzzle = "1.3...2.....4..."
    code, out, err = run(capsys, "solve", str(run_dir), puzzle, "--trace", "--png", str(tmp_path / "s.png"))
    assert code == 0, err
    assert out.count("after supervision step") == 4  # N_sup = 4 in TINY
    assert "supervision steps (" in out and "halting confidence" in out and (tmp_path / "s.png").exists()
    (tmp_path / "p.txt").write_text("1 . 3 .\n. . 2 .\n. . . .\n4 . . .\n")
    code, out2, _ = run(capsys, "solve", str(run_dir), str(tmp_path / "p.txt"))
    assert code == 0 and out2.splitlines()[-1] == out.splitlines()[-2]  # the file gives the same answer
    code, _, err = run(capsys, "solve", str(run_dir), "1.3..")
    assert code == 2
    one_line_error(err, "this model solves 4x4 Sudoku: 16 cells")
    code, _, err = run(capsys, "solve", str(tmp_path / "nothing"), puzzle)
    assert code == 2


def test_solve_an_arc_task_by_file_or_id(tmp_path, capsys):
    """An ARC task is answered through the puzzle embedding learned for it: found by the task's name (a file
    <task id>.json, or the id of an evaluation task); a task the model never trained on is refused."""
    import json

    from helpers import arc_files_layout as _files_layout

    root = _files_layout(tmp_path / "arc", n=2)
    data = tmp_path / "data"
    assert run(capsys, "data", "arc", "--out", str(data), "--layout", "files", "--path", str(root), "--canvas", "8",
               "--num-aug", "1")[0] == 0
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", "demo", *TINY, "data.task=arc", f"data.path={data}", "data.arc.canvas=8",
                       "train.steps=2", "model.pos_encoding=rope", "model.mixer=attention", "--out", str(run_dir))
    assert code == 0, err
    names = json.loads((data / "identifiers.json").read_text())
    for puzzle in ("ev0", str(root / "evaluation" / "ev1.json"), str(root / "training" / "tr0.json")):
        code, out, err = run(capsys, "solve", str(run_dir), puzzle, "--trace", "--png", str(tmp_path / "a.png"))
        assert code == 0, err
        assert out.count("after supervision step") == 4 and "input" in out and "prediction" in out
        assert "as ponder eval crops it" in out or "no answer: the top-left cell is not a colour" in out
    task = ArcTask(ArcConfig(canvas=8))
    text = (root / "evaluation" / "ev1.json").read_text()
    assert names[task.puzzle_id(text, names, name=str(root / "evaluation" / "ev1.json"))] == "ev1|||t0|||0123456789"
    grid = np.array(json.loads(text)["test"][0]["input"], np.uint8)
    assert np.array_equal(task.parse(text), encode(grid, side=8))
    (tmp_path / "mine.json").write_text(text)  # the same task under a name the model never trained on
    for argv, needle in (([str(tmp_path / "mine.json")], "task mine was not trained on"),
                         (["ev1", "--test-input", "3"], "--test-input 3: task ev1 has test inputs 0..0"),
                         (["nope"], "neither an ARC task's JSON"),
                         (['{"test": [{"input": [[1, 12]]}]}'], "colours are integers 0..9"),
                         (['{"train": [], "test": [{"input": [[1]]}'], "not valid JSON")):
        code, _, err = run(capsys, "solve", str(run_dir), *argv)
        assert code == 2
        one_line_error(err, needle)


def test_solve_answers_as_the_evaluator_does_step_by_step(tmp_path, capsys):
    """`ponder solve` runs a puzzle as the evaluator runs a test example: the same prediction after every
    supervision step (the latent state carried from step to step, not restarted), the same halting logits, and the
    answer shown is the one of the first step whose halting logit passes eval.halt_threshold (N_sup if none)."""
    import numpy as np
    import torch

    from ponder.evaluate import evaluate_model, load_model
    from ponder.solve import format_solution, solve_with
    from ponder.tasks.dataset import from_pairs, read_split

    run_dir = tmp_path / "run"
    assert run(capsys, "train", "demo", *TINY, "train.steps=30", "--out", str(run_dir))[0] == 0
    puzzle = "1.3...2.....4..."
    ckpt, cfg, model, meta = load_model(run_dir)
    res = solve_with((ckpt, cfg, model, meta), puzzle)
    n_sup = cfg.model.n_supervision
    _, m = read_split(meta["data"], "test")
    arrays = from_pairs(res["inputs"][None].astype(np.uint8), np.zeros((1, len(res["inputs"])), np.uint8))
    ev = evaluate_model(cfg, model, arrays, m, torch.device("cpu"), max_steps=n_sup, keep=1, outputs=1)
    kept, raw = ev["_kept_predictions"][0], ev["_outputs"]
    halt = raw["q_halt"][:, 0] - raw.get("q_continue", np.zeros_like(raw["q_halt"]))[:, 0]
    assert len(res["steps"]) == n_sup
    for s, (step, pred, conf) in enumerate(res["steps"]):
        assert step == s + 1 and np.array_equal(pred, kept[s]), s
        assert conf == pytest.approx(float(torch.sigmoid(torch.tensor(halt[s]))), abs=1e-5), s
    assert len({round(c, 6) for _, _, c in res["steps"]}) > 1  # the steps differ: the state is carried
    middle = float(np.sort(halt)[len(halt) // 2])
    for threshold in (-1e6, 1e6, middle - 1e-4):
        loaded = load_model(run_dir, [f"eval.halt_threshold={threshold}"])
        r = solve_with(loaded, puzzle)
        above = [s + 1 for s in range(n_sup) if halt[s] > threshold]
        expected = above[0] if above else n_sup
        assert r["halted_at"] == expected and r["halted"] == bool(above), threshold
        text = format_solution(r)
        assert f"answer after {expected} of {n_sup} supervision steps" in text
        assert text.splitlines()[0] == r["task"].render(r["inputs"], kept[expected - 1]).splitlines()[0]
