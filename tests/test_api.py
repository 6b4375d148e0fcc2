"""The Python API (`ponder.train`, `ponder.load`, `Model.solve`, `Model.evaluate`): the example of docs/api.md runs as
written, on a smaller model and dataset, and gives what the CLI gives."""

import re
from pathlib import Path

import numpy as np

import ponder
from ponder import api

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
SMALL = {"model.hidden": 32, "model.n_heads": 2, "model.n_latent": 1, "model.n_cycles": 1, "model.n_supervision": 2,
         "data.sudoku.train_size": 64, "data.sudoku.test_size": 16, "train.batch_size": 16, "train.steps": 3,
         "train.log_every": 1, "train.threads": 1}


def test_the_documented_example_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    real = api.train
    seen = {}

    def small_train(preset, out=None, **overrides):  # the example's call, with a model that trains in seconds
        seen.update(preset=preset, out=out, overrides=overrides)
        return real(preset, out, progress=False, **{**overrides, **SMALL})

    monkeypatch.setattr(api, "train", small_train)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)
    assert seen == {"preset": "demo", "out": "runs/notebook", "overrides": {"train__max_minutes": 2}}
    model, answer, results = scope["model"], scope["answer"], scope["results"]
    assert isinstance(model, ponder.Model) and model.config.model.n_supervision == 2
    assert answer.prediction.shape == (36,) and 1 <= answer.halted_at <= 2 and len(answer.steps) == 2
    assert results["n"] == 16 and results["exact"] and all(0.0 <= e <= 1.0 for e in results["exact"])
    printed = capsys.readouterr().out
    assert "after supervision step 1" in printed and "answer after" in printed


def test_load_and_solve_equal_the_cli(tmp_path):
    """`ponder.load(run).solve(p)` gives the answer `ponder solve run p` computes (the same function underneath)."""
    from ponder.solve import solve

    model = ponder.train("demo", tmp_path / "run", progress=False, **SMALL)
    puzzle = "3.4......1.....4..6....5....26..2..."
    mine, cli = model.solve(puzzle).result, solve(tmp_path / "run", puzzle)
    assert mine["halted_at"] == cli["halted_at"]
    for (s1, p1, c1), (s2, p2, c2) in zip(mine["steps"], cli["steps"]):
        assert s1 == s2 and np.array_equal(p1, p2) and c1 == c2
    assert ponder.load(tmp_path / "run", model__n_supervision=1).config.model.n_supervision == 1
