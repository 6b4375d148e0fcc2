"""`ponder demo` (= `make demo`): the embedded default. No download, no data folder.

Generates Sudoku puzzles, trains a CPU-sized but faithful TRM under a wall-time budget, evaluates on held-out
puzzles, prints the test-time scaling table and writes the plot and step-by-step pictures. The recipe (board size,
model width, n/T, N_sup, batch, learning rate) lives in `ponder/presets/demo.yaml`; why it was chosen is in the README.
"""

from __future__ import annotations

import time
from pathlib import Path

from ponder.checkpoint import load_config
from ponder.config import resolve
from ponder.evaluate import evaluate_checkpoint, format_table
from ponder.models import build_model, count_params
from ponder.run import fresh_run_dir
from ponder.tasks import get_task, prepare_data
from ponder.trainer import train


def run_demo(out: Path, overrides: list[str] = (), minutes: float | None = None) -> dict:
    t0 = time.perf_counter()
    overrides = list(overrides) + ([f"train.max_minutes={minutes}"] if minutes is not None else [])
    cfg = resolve("demo", overrides)
    fresh_run_dir(out, cfg)  # a folder that holds other work is refused before anything is built into it
    s, m = cfg.data.sudoku, cfg.model
    meta = get_task(cfg.data).metadata()
    weights = count_params(build_model(m, meta.vocab_size, meta.seq_len))
    print(f"ponder demo -> {out}")
    print(f"  task : {s.size}x{s.size} Sudoku, {s.train_size} generated train puzzles (x{s.num_aug + 1} augmented), "
          f"{s.test_size} held-out test puzzles")
    print(f"  model: TRM-{m.mixer}, hidden {m.hidden}, {m.n_layers} layers, n={m.n_latent}, T={m.n_cycles}, "
          f"N_sup={m.n_supervision}: {weights:,} weights")
    print(f"  train: {cfg.train.steps} steps of batch {cfg.train.batch_size} (budget {cfg.train.max_minutes:g} min), "
          f"train.dtype={cfg.train.dtype} on {cfg.train.device}")
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    prepare_data(cfg.data, out)
    print(f"  data built in {time.perf_counter() - t:.1f}s")
    run = train(cfg, out)
    t = time.perf_counter()
    trained = load_config(run.checkpoint).train.dtype  # what train.dtype=auto picked: evaluate in the same
    res, eval_dir = evaluate_checkpoint(run.checkpoint, overrides=[f"train.dtype={trained}"], pictures=2)
    total = time.perf_counter() - t0
    print()
    print(format_table(res))
    one, full = res["exact"][0], res["exact"][cfg.model.n_supervision - 1]
    print(f"\nexact accuracy: {100 * one:.1f}% after 1 supervision step -> {100 * full:.1f}% after "
          f"{cfg.model.n_supervision} (adaptive halting: {100 * res['adaptive']['exact']:.1f}% in "
          f"{res['adaptive']['mean_steps']:.2f} steps on average)")
    print(f"trained {run.step} steps in {run.seconds / 60:.1f} min ({trained}); evaluation {time.perf_counter() - t:.0f}s; "
          f"demo wall time {total / 60:.1f} min")
    print(f"plot: {eval_dir / 'scaling.png'}   solving step by step: {eval_dir / 'solving_0.png'}")
    print(f"checkpoint: {run.checkpoint}  (ponder eval {run.checkpoint})")
    return res
