"""What several test modules share (no test module imports another): the tiny training settings, a CLI runner,
and small data writers. The `data_dir` fixture built from TINY lives in conftest.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ponder import checkpoint
from ponder.cli import main
from ponder.config import resolve

TINY = ["model.hidden=32", "model.n_heads=2", "model.n_latent=2", "model.n_cycles=2", "model.n_supervision=4",
        "model.puzzle_emb=true", "model.puzzle_emb_len=2", "data.sudoku.size=4", "data.sudoku.train_size=64",
        "data.sudoku.test_size=16", "data.sudoku.num_aug=1", "train.batch_size=16", "train.lr=3e-3",
        "train.lr_warmup_steps=2", "train.log_every=2", "train.checkpoint_every=0", "train.max_minutes=0",
        "train.augment=true", "train.threads=0", "eval.max_steps=6"]


def tiny(data_dir, *extra):
    """The demo preset at TINY size on the `data_dir` fixture's dataset, with `extra` overrides."""
    return resolve("demo", TINY + [f"data.path={data_dir}", *extra])


def weights(run_dir):
    """(raw weights, EMA weights) of a run's latest checkpoint."""
    ck = checkpoint.list_checkpoints(run_dir)[-1]
    return checkpoint.load_weights(ck, ema=False), checkpoint.load_weights(ck, ema=True)


def run(capsys, *argv):
    """`ponder ARGV` in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, needle: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ponder: error:") and needle in lines[0], err
    assert "Traceback" not in err


def maze_text(tokens: np.ndarray) -> str:
    """(N*N,) maze tokens -> the CSV's text form."""
    from ponder.tasks.maze import CHARSET

    return "".join(CHARSET[t - 1] for t in tokens.tolist())


def arc_task(rng: np.random.Generator, n_train: int = 2, n_test: int = 1) -> dict:
    """A small random ARC task (outputs mirror their inputs)."""
    def pair() -> dict:
        g = rng.integers(0, 10, size=tuple(rng.integers(1, 8, size=2))).tolist()
        return {"input": g, "output": [row[::-1] for row in g]}

    return {"train": [pair() for _ in range(n_train)], "test": [pair() for _ in range(n_test)]}


def arc_files_layout(root: Path, n: int = 3, seed: int = 0) -> Path:
    """root/training, root/evaluation, root/concept with n small random tasks each (ids tr0.., ev0.., co0..)."""
    rng = np.random.default_rng(seed)
    for folder, prefix in (("training", "tr"), ("evaluation", "ev"), ("concept", "co")):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            (root / folder / f"{prefix}{i}.json").write_text(json.dumps(arc_task(rng)))
    return root
