"""The Python API: what the CLI does, as functions a notebook calls (the CLI calls the same ones).

    import ponder

    model = ponder.train("demo", "runs/nb", **{"train.max_minutes": 2})   # train a preset; dotted keys override it
    model = ponder.load("runs/nb")              # or load a run (its latest checkpoint) or one checkpoint directory
    model.config.model.n_supervision            # the run's resolved config (ponder.config.Config)
    answer = model.solve("3.4......1.....4..6....5....26..2...")   # your own puzzle, in the task's text format
    print(answer)                               # the answer grid, the supervision steps used, the confidence
    answer.prediction                           # the final answer's tokens (numpy), answer.steps for every step
    results = model.evaluate()                  # the test split: exact, per step, ... (the dict results.json holds)

Overrides are the CLI's `key=value` strings as keyword arguments: `**{"train.lr": 3e-4}`, or `train__lr=3e-4`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ponder import UserError, distributed


def _overrides(options: dict) -> list[str]:
    return [f"{key.replace('__', '.')}={value}" for key, value in options.items()]


@dataclass
class Answer:
    """A model's answer to one puzzle (`Model.solve`)."""

    result: dict  # what `ponder solve` prints: inputs, steps [(step, tokens, confidence)], halted_at, task, ...
    trace: bool = False  # str() shows the answer after every step

    @property
    def prediction(self) -> np.ndarray:
        """The answer's tokens after the step the model halted at."""
        return self.result["steps"][self.result["halted_at"] - 1][1]

    @property
    def steps(self) -> list[tuple[int, np.ndarray, float | None]]:
        return self.result["steps"]

    @property
    def halted_at(self) -> int:
        return self.result["halted_at"]

    def __str__(self) -> str:
        from ponder.solve import format_solution

        return format_solution(self.result, trace=self.trace)


class Model:
    """A trained model loaded from a run or checkpoint directory (`load`): EMA weights unless ema=False."""

    def __init__(self, path: str | Path, device: str = "cpu", ema: bool = True, **overrides) -> None:
        from ponder.evaluate import load_model
        from ponder.runtime import resolve_device

        resolve_device(device, "device")
        self.device, self.ema, self.overrides = device, ema, _overrides(overrides)
        self.checkpoint, self.config, self.model, self.meta = load_model(path, self.overrides, device, ema)

    def solve(self, puzzle: str, k: int | None = None, test_input: int = 0, trace: bool = False) -> Answer:
        """The answer to one puzzle given as text (or a file path), as `ponder solve` reads it; `k` for 1dCA, the
        test input for ARC."""
        from ponder.solve import solve_with

        loaded = (self.checkpoint, self.config, self.model, self.meta)
        return Answer(solve_with(loaded, puzzle, self.device, k, test_input), trace)

    def evaluate(self, data: str | Path | None = None, steps: int | None = None, out: str | Path | None = None,
                 **overrides) -> dict:
        """`ponder eval`: the test split (of `data`, or the run's dataset) with `steps` supervision steps (default
        the model's N_sup); writes results.json and the pictures into `out` (default <checkpoint>/eval...)."""
        from ponder.evaluate import evaluate_checkpoint

        extra = self.overrides + _overrides(overrides) + ([f"model.n_supervision={steps}"] if steps else [])
        res, _ = evaluate_checkpoint(self.checkpoint, str(data) if data else None, extra, out, self.device,
                                     ema=self.ema)
        return res

    def __repr__(self) -> str:
        return f"ponder.Model({str(self.checkpoint)!r}, family={self.config.model.family!r})"


def load(path: str | Path, device: str = "cpu", ema: bool = True, **overrides) -> Model:
    """A run directory (its latest checkpoint) or a checkpoint directory, ready to solve and evaluate."""
    return Model(path, device, ema, **overrides)


def train(preset: str, out: str | Path | None = None, resume: bool = False, progress: bool = True,
          **overrides) -> Model:
    """`ponder train PRESET --out OUT key=value ...` (or `--resume OUT` with resume=True); returns the trained model.
    One process; under torchrun every rank calls it and all train."""
    from ponder.config import resolve
    from ponder.run import choose_run_dir, default_run_dir, resumed_config
    from ponder.trainer import train as train_run

    if resume:
        cfg, run_dir, resume = resumed_config(out, _overrides(overrides))
    else:
        cfg = resolve(preset, _overrides(overrides))
        run_dir = choose_run_dir(default_run_dir(preset, out), cfg)
    with distributed.leaving():
        train_run(cfg, run_dir, resume=resume, progress=progress)
    return load(run_dir, cfg.train.device)


def describe(preset: str, overrides: list[str] = ()) -> str:
    """`ponder info`: the preset's resolved config as YAML (the sections its model and regime use) and a last line
    with the model and its weight count."""
    import yaml

    from ponder.config import load_preset, resolve, used_sections
    from ponder.models import build_model, count_params
    from ponder.tasks import get_task
    from ponder.tasks.dataset import read_metadata

    cfg = resolve(preset, list(overrides))
    lm = "lm" in load_preset(preset)  # a `ponder lm` preset: the LM, its training and evaluation settings
    text = yaml.safe_dump(used_sections(cfg, lm), sort_keys=False)
    if lm:
        from ponder.lm.train import lm_weight_count

        needs = [f"lm.{k}={v}" for k, v in (("task_data", cfg.lm.task_data), ("eval_data", cfg.lm.eval_data)) if v]
        try:
            n, n_base = lm_weight_count(cfg.lm)
            count = f"{n:,} weights (base {n_base:,}: its layers kept in the sections, the head untied, a 2h x h adapter)"
        except UserError as e:  # the base is not installed here: say how to get it, the config is still shown
            count = f"weights counted once the base model is found ({e})"
        return text + (f"# a retrofitted LM (`ponder lm train|run`) on base {cfg.lm.base}, prelude {cfg.lm.prelude}, "
                       f"core {cfg.lm.core}, coda {cfg.lm.coda}: {count}"
                       + (f"; reads your files {', '.join(needs)} (relative to the current directory)" if needs else ""))
    built = cfg.data.path and (Path(cfg.data.path) / "train" / "dataset.json").exists()
    meta = read_metadata(cfg.data.path, "train") if built else get_task(cfg.data).metadata()
    model = build_model(cfg.model, meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers)
    kind = f" ({cfg.model.mixer})" if cfg.model.carries_state else (f" (ACT: {cfg.model.act})" if cfg.model.act != "off"
                                                                    else "")
    return text + (f"# {cfg.model.family.upper()}{kind}, vocab {meta.vocab_size}, seq_len {meta.seq_len}: "
                   f"{count_params(model):,} weights (puzzle-identifier table excluded)")
