"""`ponder solve CHECKPOINT_OR_RUN INPUT`: a trained model's answer to the user's own puzzle (a Sudoku string or file,
a maze as text, a 1dCA orbit, an ARC task), with the supervision steps it used and its halting confidence.

The puzzle is read by its task (`Task.parse`: size, characters and the puzzle's own rules checked, a one-line error
otherwise) and run as the evaluator runs a test example: supervision steps until the halting logit is > 0
(eval.halt_threshold), at the latest N_sup; `trace` keeps the answer after every step up to N_sup. A one-pass
sequence model answers once (generating its answer token by token where the evaluator would).

ARC: the input is a task's JSON or the id of one of the run's evaluation tasks; its puzzle identifier is looked up
by name in the dataset's identifiers.json (`Task.puzzle_id`), since the model knows a task only through the
embedding learned for it. The identity version is answered (no voting over augmented versions as `ponder eval`
does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ponder import UserError, plots, runtime
from ponder.evaluate import answer_step, generation_start, load_model
from ponder.tasks import get_task


def read_input(text_or_path: str) -> str:
    """The puzzle text: the argument itself, or the file it names, or stdin for '-'."""
    if text_or_path == "-":
        import sys

        return sys.stdin.read()
    path = Path(text_or_path)
    if len(text_or_path) < 4096 and "\n" not in text_or_path and path.is_file():
        try:
            return path.read_text()
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a text file") from None
    return text_or_path


@torch.inference_mode()
def solve(path: str | Path, puzzle: str, overrides: list[str] = (), device: str = "cpu", ema: bool = True,
          k: int | None = None, test_input: int = 0) -> dict:
    """The answer to one puzzle: {inputs, steps: [(step, prediction tokens, halting confidence)], halted_at,
    n_supervision, task, text}."""
    return solve_with(load_model(path, overrides, device, ema), puzzle, device, k, test_input)


@torch.inference_mode()
def solve_with(loaded: tuple, puzzle: str, device: str = "cpu", k: int | None = None, test_input: int = 0) -> dict:
    """`solve` with the model already loaded: `loaded` is `load_model`'s (checkpoint, config, model, metadata)."""
    ckpt, cfg, model, meta = loaded
    task = get_task(cfg.data)
    text = read_input(puzzle)
    is_file = puzzle != "-" and len(puzzle) < 4096 and "\n" not in puzzle and Path(puzzle).is_file()
    options = {"k": k, "test_input": test_input, "name": puzzle if is_file else "", "data": meta.get("data", "")}
    inputs = np.asarray(task.parse(text, **options)).astype(np.int64)
    if inputs.shape != (meta["seq_len"],) or inputs.max() >= meta["vocab_size"]:
        raise UserError(f"{ckpt}: this puzzle has {inputs.size} tokens up to {inputs.max()}; the model reads "
                        f"{meta['seq_len']} tokens below {meta['vocab_size']} (trained on other data settings)")
    x = torch.as_tensor(inputs[None], device=device)
    pid = torch.tensor([task.puzzle_id(text, _names(meta), **options) if cfg.model.puzzle_emb else 0], device=device)
    dev = torch.device(device)
    start = generation_start(cfg, task, model)
    n_sup = cfg.model.n_supervision
    state = model.initial_state(1, device)
    steps, halted_at = [], None
    for s in range(1, n_sup + 1):
        with runtime.autocast(cfg.train.dtype, dev):
            out, pred = answer_step(cfg, model, task, state, x, pid, start, meta["seq_len"])
        pred = pred[0].cpu().numpy()
        state = out.state
        halt = out.q_halt if out.q_continue is None else out.q_halt - out.q_continue
        confidence = float(torch.sigmoid(halt.float())[0]) if cfg.model.carries_state else None
        steps.append((s, pred, confidence))
        if halted_at is None and cfg.model.carries_state and float(halt[0]) > cfg.eval.halt_threshold:
            halted_at = s
    return {"checkpoint": str(ckpt), "inputs": inputs, "steps": steps, "halted_at": halted_at or n_sup,
            "halted": halted_at is not None, "n_supervision": n_sup, "task": task,
            "one_pass": not cfg.model.carries_state}


def _names(meta: dict) -> list[str]:
    """The puzzle names of the checkpoint's dataset (identifiers.json), or just the blank when it has none."""
    path = Path(meta.get("data", "")) / "identifiers.json"
    if not meta.get("data") or not path.is_file():
        return ["<blank>"]
    from ponder.files import read_json

    names = read_json(path)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: expected a list of puzzle names")
    return names


def format_solution(res: dict, trace: bool = False) -> str:
    task, inputs = res["task"], res["inputs"]
    lines = []
    if trace:
        for s, pred, conf in res["steps"]:
            lines.append(f"after supervision step {s}" + (f" (halting confidence {conf:.3f})" if conf is not None else "")
                         + ":\n" + task.render(inputs, pred))
        lines.append("")
    s, pred, conf = res["steps"][res["halted_at"] - 1]
    lines.append(task.render(inputs, pred))
    if res["one_pass"]:
        lines.append("answered in one pass (a sequence model)")
    else:
        why = "halted" if res["halted"] else "N_sup reached without halting"
        lines.append(f"answer after {s} of {res['n_supervision']} supervision steps ({why}; halting confidence "
                     f"{conf:.3f})")
    return "\n".join(lines)


def draw_solution(res: dict, path: Path) -> None:
    """The puzzle and the answer after each supervision step up to the one used (no target: nothing marked wrong)."""
    task = res["task"]
    answers = {s: task.grid(pred) for s, pred, _ in res["steps"][: res["halted_at"]]}
    region = task.crop([task.grid(res["inputs"]), *answers.values()])
    plots.plot_solving(task.grid(res["inputs"])[region], None, {k: a[region] for k, a in answers.items()}, Path(path),
                       task.palette, task.box, legend=task.legend)
