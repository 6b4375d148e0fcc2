"""Evaluation: exact and cell accuracy, the test-time scaling table, adaptive halting, plots and pictures.

One pass runs every test example for `max_steps` supervision steps (default 2 x N_sup, i.e. beyond what was
trained) and records, after each step, whether the whole answer is right (exact), the fraction of right cells and
the halting logit. From that single trace come:
- the scaling table: accuracy after 1, 2, 4, ..., max_steps steps (and every step in the JSON and the plot);
- adaptive halting: each example stops at the first step whose halting logit (q_halt, or q_halt - q_continue for
  a model with a continue head) is > 0 (at the latest after N_sup) and is scored there; the mean number of steps
  used is reported beside its accuracy.
The official evaluator always runs the full N_sup steps; ponder reports that figure too (the row at N_sup).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ponder import IGNORE, UserError, checkpoint, distributed, plots, runtime
from ponder.config import Config, to_dict
from ponder.files import LOCK, MARKER, Output, atomic_open, atomic_write_text, entry
from ponder.progress import progress
from ponder.models import build_model
from ponder.run import config_from_checkpoint, tensorboard
from ponder.tasks import Task, get_task, task_for
from ponder.tasks.batches import batch_tensors
from ponder.tasks.dataset import Metadata, PuzzleArrays, read_split


def generation_start(cfg: Config, task: Task, model) -> int | None:
    """Where evaluation generates the answer token by token (eval.decode), or None for one pass over the inputs.
    A teacher-forced layout (cot) holds the answer in its inputs: it is always generated."""
    decode = cfg.eval.decode
    if decode == "auto":
        decode = "greedy" if task.teacher_forced or cfg.policy.sequential else "parallel"
    if decode == "parallel":
        if task.teacher_forced:
            raise UserError("eval.decode=parallel: this layout holds the true answer in its inputs (teacher "
                            "forcing); its answers are generated (eval.decode=greedy or auto)")
        return None
    start = task.prompt_length()
    if start is None or not model.generates:
        raise UserError(f"eval.decode=greedy needs a causal sequence model (model.family neox, lstm, mamba) on a "
                        f"layout with a prompt (data.ca1d.layout causal, generate or cot); got {cfg.model.family} on this data")
    return start


def completion_length(cfg: Config, seq_len: int, start: int) -> int:
    """Tokens generated after the prompt: the answer's positions, plus a sequence policy's free reasoning tokens
    and its end token (Config.policy)."""
    return seq_len - start + cfg.policy.extra_tokens


def answer_step(cfg: Config, model, task: Task, state, inputs, pids, start: int | None, seq_len: int):
    """One supervision step's (output, predictions (B, L)): one pass over the inputs (start None), or the answer
    generated from the first `start` tokens, the model seeing only its own tokens after them (then the output is
    that of a pass over the generated sequence: ACT hops, raw logits)."""
    if start is None:
        out = model(state, inputs, pids)
        return out, out.logits.argmax(-1)
    new = model.generate(inputs[:, :start], completion_length(cfg, seq_len, start))
    out = model(state, torch.cat((inputs[:, :start], new), 1), pids)
    out.logits = out.logits[:, :seq_len]
    pred = task.decode(inputs.cpu().numpy(), new.cpu().numpy(), cfg.policy.reasoning_tokens > 0)
    return out, torch.as_tensor(pred, device=inputs.device)


def step_counts(cfg: Config, max_steps: int | None = None) -> tuple[int, int, int]:
    """(N_sup, supervision steps to run, the step adaptive halting stops at the latest): `max_steps`, else
    eval.max_steps, else 2 x N_sup; one step for the 1dCA sequence models, which answer in one pass (a second
    step would repeat it)."""
    n_sup = cfg.model.n_supervision
    max_steps = (max_steps or cfg.eval.max_steps or 2 * n_sup) if cfg.model.carries_state else 1
    return n_sup, max_steps, min(n_sup, max_steps)


def _capture(raw: dict, s: int, lo: int, size: int, out) -> None:
    """Step `s`'s raw outputs (float32 logits, halting logits) of the batch at row `lo`, within the rows kept."""
    hi = min(raw["q_halt"].shape[1], lo + size)
    raw["logits"][s, lo:hi] = out.logits[: hi - lo].float().cpu().numpy()
    raw["q_halt"][s, lo:hi] = out.q_halt[: hi - lo].float().cpu().numpy()
    if out.q_continue is not None:
        raw["q_continue"][s, lo:hi] = out.q_continue[: hi - lo].float().cpu().numpy()


def _gathered(n, exact, cell, q_halt, kept, final, final_q, task_scores, raw, hops):
    """Under torchrun: every rank's rows summed into the whole evaluation (each row written by one rank)."""
    keys = sorted(distributed.broadcast(sorted(task_scores)))
    task_scores = {k: task_scores.get(k, np.zeros(n, np.float32)) for k in keys}
    exact, cell, q_halt, kept, final, final_q, *scores = (
        distributed.sum_rows(a) for a in (exact, cell, q_halt, kept, final, final_q, *task_scores.values()))
    raw = {k: distributed.sum_rows(v) for k, v in raw.items()}
    hops = distributed.sum_rows(hops) if hops is not None else None
    return exact.astype(bool), cell, q_halt, kept, final, final_q, dict(zip(keys, scores)), raw, hops


def _summary(rows: np.ndarray, exact, cell, halt_step, hops) -> dict:
    """Exact and cell accuracy per step, and under adaptive halting, of the examples `rows`."""
    out = {"n": int(len(rows)), "exact": exact[rows].mean(0).tolist(), "cell": cell[rows].mean(0).tolist(),
           "adaptive": {"exact": float(exact[rows, halt_step[rows]].mean()),
                        "cell": float(cell[rows, halt_step[rows]].mean()),
                        "mean_steps": float((halt_step[rows] + 1).mean())}}
    if hops is not None:  # mean hops per token, overall and per ACT unit (layer, or the whole stack)
        out["act_hops"] = {"mean": float(hops[rows].mean()), "per_unit": hops[rows].mean(0).tolist()}
    return out


@torch.inference_mode()
def evaluate_model(cfg: Config, model, arrays: PuzzleArrays, meta: Metadata, device, max_steps: int | None = None,
                   keep: int = 0, task: Task | None = None, outputs: int = 0) -> dict:
    """Run the trace. `keep` > 0 also returns the predictions after every step of the first `keep` examples;
    `outputs` > 0 the raw outputs (float32 logits, halting logits) after every step of the first `outputs` examples.
    `task` (default: data.task's) adds its scores, groups and pooled answers."""
    model.eval()
    n_sup, max_steps, last = step_counts(cfg, max_steps)
    n = arrays.num_examples if not cfg.eval.max_examples else min(cfg.eval.max_examples, arrays.num_examples)
    exact = np.zeros((n, max_steps), bool)
    cell, q_halt = np.zeros((n, max_steps), np.float32), np.zeros((n, max_steps), np.float32)
    kept = np.zeros((min(keep, n), max_steps, meta.seq_len), np.int64)
    raw = {"logits": np.zeros((max_steps, min(outputs, n), meta.seq_len, meta.vocab_size), np.float32),
           "q_halt": np.zeros((max_steps, min(outputs, n)), np.float32),
           "q_continue": np.zeros((max_steps, min(outputs, n)), np.float32)}  # step-major, as the official evaluator
    task_scores: dict[str, np.ndarray] = {}  # per-example task metrics (a row is filled by the rank that ran it)
    task = task or get_task(cfg.data)
    final = np.zeros((n if task.aggregates else 0, meta.seq_len), np.uint8)  # answers at N_sup, for voting
    final_q = np.zeros(len(final), np.float32)  # their q_halt: the voting confidence (also for HRM, as its notebook)
    strata, grouped = np.empty(n, object), False  # per-example group labels of tasks that define them (1dCA: k)
    hops: np.ndarray | None = None  # (n, units) per-token ACT hops at N_sup (the 1dCA sequence models' model.act)
    start = generation_start(cfg, task, model)  # greedy decoding from the prompt, or None: one pass
    world = distributed.world()  # under torchrun, rank r runs batches r, r + W, ... and the rows are summed at the end
    batches = range(0, n, cfg.eval.batch_size)
    for b, lo in progress(enumerate(batches), len(batches), f"evaluating {n} examples", enabled=world.main):
        idx = np.arange(lo, min(n, lo + cfg.eval.batch_size))
        labels_of = task.strata(np.asarray(arrays.inputs[idx]))
        if labels_of is not None:
            strata[idx], grouped = labels_of, True
        if b % world.size != world.rank:
            continue
        inputs, labels, pids = batch_tensors(arrays, idx, meta.ignore_label_id, device)
        state = model.initial_state(len(idx), device)
        mask = labels != IGNORE
        counts = mask.sum(-1).clamp_min(1)
        for s in range(max_steps):
            with runtime.autocast(cfg.train.dtype, device):
                out, pred = answer_step(cfg, model, task, state, inputs, pids, start, meta.seq_len)
            state = out.state
            correct = (pred == labels) & mask
            exact[idx, s] = (correct.sum(-1) == mask.sum(-1)).cpu().numpy()
            cell[idx, s] = (correct.sum(-1) / counts).cpu().numpy()
            halt_logit = out.q_halt if out.q_continue is None else out.q_halt - out.q_continue  # HRM halts when >
            q_halt[idx, s] = halt_logit.float().cpu().numpy()
            if s + 1 == last:  # the answer at N_sup: pooled (ARC voting), ACT hops, the task's own scores
                if len(final):
                    final[idx], final_q[idx] = pred.cpu().numpy(), out.q_halt.float().cpu().numpy()
                if out.hops is not None:
                    hops = np.zeros((n, out.hops.shape[1]), np.float32) if hops is None else hops
                    hops[idx] = out.hops.float().cpu().numpy()
                for key, v in task.score(inputs.cpu().numpy(), pred.cpu().numpy(), labels.cpu().numpy()).items():
                    task_scores.setdefault(key, np.zeros(n, np.float32))[idx] = v
            if lo < len(kept):  # the first `keep` examples, which may span several batches
                hi = min(len(kept), lo + len(idx))
                kept[lo:hi, s] = pred[: hi - lo].cpu().numpy()
            if lo < outputs:
                _capture(raw, s, lo, len(idx), out)

    if world.parallel:  # every row was written by exactly one rank, zeros elsewhere: a sum assembles them
        exact, cell, q_halt, kept, final, final_q, task_scores, raw, hops = _gathered(
            n, exact, cell, q_halt, kept, final, final_q, task_scores, raw, hops)
    stops = q_halt[:, :last] > cfg.eval.halt_threshold
    halt_step = np.where(stops.any(1), stops.argmax(1), last - 1)

    def summary(rows: np.ndarray) -> dict:
        return _summary(rows, exact, cell, halt_step, hops)

    result = {"n_supervision": n_sup, "steps": list(range(1, max_steps + 1)), **summary(np.arange(n)),
              "task_metrics": {k: float(v.mean()) for k, v in task_scores.items()}}
    if not cfg.model.carries_state:
        result["one_pass"] = True  # no test-time steps to scale: the table has one row
    result["decode"] = "parallel" if start is None else "greedy"  # greedy: answers generated token by token
    if grouped:  # e.g. 1dCA: every metric per k
        result["groups"] = {str(g): summary(np.flatnonzero(strata == g)) for g in sorted(set(strata.tolist()))}
    if keep:
        result["_kept_predictions"] = kept
    if outputs:
        result["_outputs"] = raw
    if len(final):
        result["_final"] = (final, final_q)
    if cfg.eval.vote > 1:  # reported beside the single-pass figures, never in place of them
        if task.versions(np.random.default_rng(0), np.asarray(arrays.inputs[:1])) is None:
            raise UserError(f"eval.vote={cfg.eval.vote}: {task.name} has no test-time symmetries to vote over")
        result["vote"] = evaluate_votes(cfg, model, task, arrays, meta, device, max_steps, n)
    return result


def vote_answers(candidates: np.ndarray, valid: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """(B, K, L) answers to one input each in K versions, mapped back to its frame -> (B, L) the winner: among the
    rule-abiding answers if any (`valid`, (B, K)), the one given most often, ties to the higher summed confidence
    (sigmoid of the halting logit, (B, K)), then to the earlier version."""
    same = np.all(candidates[:, :, None] == candidates[:, None], axis=3)  # (B, K, K)
    count = same.sum(2)
    support = (same * confidence[:, None]).sum(2)  # summed confidence of the identical answers, < K
    k = candidates.shape[1]
    score = (valid.astype(np.float64) * (k + 1) + count) * (k + 1) + support
    return candidates[np.arange(len(candidates)), score.argmax(1)]


@torch.inference_mode()
def evaluate_votes(cfg: Config, model, task: Task, arrays: PuzzleArrays, meta: Metadata, device, max_steps: int,
                   n: int) -> dict:
    """Test-time augmentation (eval.vote = K): every test input is solved as itself and in K - 1 random symmetric
    versions (`Task.versions`, seeded by data.seed and the batch), each answer is mapped back and the K vote
    (`vote_answers`) after every supervision step. Exact and cell accuracy of the voted answer per step."""
    k = cfg.eval.vote
    exact, cell = np.zeros((n, max_steps), bool), np.zeros((n, max_steps), np.float32)
    world = distributed.world()
    batch = max(1, cfg.eval.batch_size // k)  # K rows per input: the same memory as a plain evaluation batch
    batches = range(0, n, batch)
    for b, lo in progress(enumerate(batches), len(batches), f"voting over {k} versions of {n} examples",
                          enabled=world.main):
        if b % world.size != world.rank:
            continue
        idx = np.arange(lo, min(n, lo + batch))
        inputs, labels, pids = batch_tensors(arrays, idx, meta.ignore_label_id, device)
        original = inputs.cpu().numpy()
        rng = np.random.default_rng([cfg.data.seed, 0x766F7465, b])
        versions, undo = [original], [lambda preds: preds]
        for _ in range(k - 1):
            version, back = task.versions(rng, original)
            versions.append(version)
            undo.append(back)
        many = torch.from_numpy(np.concatenate(versions)).long().to(device)
        state = model.initial_state(len(many), device)
        mask = labels != IGNORE
        for s in range(max_steps):
            with runtime.autocast(cfg.train.dtype, device):
                out = model(state, many, pids.repeat(k))
            state = out.state
            preds = out.logits.argmax(-1).cpu().numpy().reshape(k, len(idx), -1)
            answers = np.stack([back(p) for back, p in zip(undo, preds)], axis=1)  # (B, K, L) in the input's frame
            valid = np.stack([task.score(original, a, labels.numpy()).get("valid", np.zeros(len(idx)))
                              for a in answers.transpose(1, 0, 2)], axis=1)
            halt = out.q_halt if out.q_continue is None else out.q_halt - out.q_continue
            confidence = torch.sigmoid(halt.float()).cpu().numpy().reshape(k, len(idx)).T
            winner = torch.from_numpy(vote_answers(answers, valid, confidence)).to(labels.device)
            correct = (winner == labels) & mask
            exact[idx, s] = (correct.sum(-1) == mask.sum(-1)).cpu().numpy()
            cell[idx, s] = (correct.sum(-1) / mask.sum(-1).clamp_min(1)).cpu().numpy()
    if world.parallel:
        exact, cell = distributed.sum_rows(exact).astype(bool), distributed.sum_rows(cell)
    return {"k": k, "exact": exact.mean(0).tolist(), "cell": cell.mean(0).tolist()}


@torch.inference_mode()
def evaluate_adaptive(cfg: Config, model, arrays: PuzzleArrays, meta: Metadata, device) -> dict:
    """Adaptive halting as a deployment runs it: each puzzle stops at its first halt logit > eval.halt_threshold (at
    the latest at N_sup), and halted puzzles leave the batch, so the work shrinks with the steps actually used.
    Gives the same answers as the `adaptive` entry of `evaluate_model` (which runs every step to draw the trace)."""
    model.eval()
    n_sup = cfg.model.n_supervision
    n = arrays.num_examples if not cfg.eval.max_examples else min(cfg.eval.max_examples, arrays.num_examples)
    exact, cell, steps = np.zeros(n, bool), np.zeros(n, np.float32), np.zeros(n, np.int64)
    world = distributed.world()
    t0 = time.perf_counter()
    for b, lo in enumerate(range(0, n, cfg.eval.batch_size)):
        if b % world.size != world.rank:
            continue
        rows = torch.arange(lo, min(n, lo + cfg.eval.batch_size))
        inputs, labels, pids = batch_tensors(arrays, rows.numpy(), meta.ignore_label_id, device)
        state = model.initial_state(len(rows), device)
        for s in range(n_sup):
            with runtime.autocast(cfg.train.dtype, device):
                out = model(state, inputs, pids)
            halt = out.q_halt if out.q_continue is None else out.q_halt - out.q_continue
            done = (halt.float() > cfg.eval.halt_threshold) | (s + 1 == n_sup)
            if done.any():
                mask = labels[done] != IGNORE
                correct = (out.logits[done].argmax(-1) == labels[done]) & mask
                idx = rows[done.cpu()].numpy()
                exact[idx] = (correct.sum(-1) == mask.sum(-1)).cpu().numpy()
                cell[idx] = (correct.sum(-1) / mask.sum(-1).clamp_min(1)).cpu().numpy()
                steps[idx] = s + 1
                keep = ~done
                if not keep.any():
                    break
                rows, inputs, labels, pids = rows[keep.cpu()], inputs[keep], labels[keep], pids[keep]
                state = type(out.state)(**{k: v[keep] for k, v in vars(out.state).items()})
            else:
                state = out.state
    exact, cell, steps = (distributed.sum_rows(a) for a in (exact, cell, steps))
    seconds = time.perf_counter() - t0
    return {"n": n, "exact": float(exact.astype(bool).mean()), "cell": float(cell.mean()),
            "mean_steps": float(steps.mean()), "seconds": seconds, "puzzles_per_s": n / seconds,
            "halt_threshold": cfg.eval.halt_threshold}


def scaling_rows(result: dict) -> list[tuple[int, float, float]]:
    """(steps, exact, cell) at 1, 2, 4, ... and at N_sup and the last step."""
    steps = result["steps"]
    picks = sorted({s for s in [2**i for i in range(12)] + [result["n_supervision"], steps[-1]] if s <= steps[-1]})
    return [(s, result["exact"][s - 1], result["cell"][s - 1]) for s in picks]


def format_results(result: dict) -> str:
    """What `ponder eval` prints: the examples asked for (--show), the scaling table, then the task's own metrics
    (ARC: voting, pass@1 and pass@2; counts as counts)."""
    lines = [text + "\n" for text in result.pop("_examples", [])]
    lines.append(format_table(result))
    for key, value in result["task_metrics"].items():
        if key in ("test_inputs", "puzzles"):  # counts (ARC voting)
            lines.append(f"{key}: {int(value)}")
        elif not key.startswith("pass@") or key.split("@")[1].split("_")[0] in ("1", "2"):  # pass@5.. in the JSON
            lines.append(f"{key}{'' if result.get('one_pass') else ' at N_sup'}: {100 * value:.1f}%")
    return "\n".join(lines)


def format_table(result: dict) -> str:
    """The scaling table; with groups (e.g. 1dCA's k), one exact-accuracy column per group after the overall ones.
    A one-pass model (the 1dCA sequence models) gets one row and no adaptive-halting row."""
    groups = result.get("groups", {})
    one_pass = result.get("one_pass", False)
    vote = result.get("vote")
    head = f"{'one pass' if one_pass else 'supervision steps':>18} | {'exact':>7} | {'cell':>7}" + "".join(
        f" | {g:>7}" for g in groups) + (f" | {'voted':>7}" if vote else "")
    which = "held-out" if result.get("split", "test") == "test" else f"{result['split']}-split"
    how = "answers generated token by token" if result.get("decode") == "greedy" else "one pass"
    title = (f"evaluation on {result['n']} {which} examples (a sequence model: {how})" if one_pass else
             f"test-time scaling on {result['n']} {which} examples (trained with N_sup = {result['n_supervision']})")
    lines = [title + ("; per-group columns: exact" if groups else ""), head, "-" * len(head)]
    for s, e, c in scaling_rows(result):
        mark = "" if one_pass else "  <- N_sup" if s == result["n_supervision"] else (
            "  (beyond training)" if s > result["n_supervision"] else "")
        per = "".join(f" | {100 * g['exact'][s - 1]:6.1f}%" for g in groups.values())
        per += f" | {100 * vote['exact'][s - 1]:6.1f}%" if vote else ""
        lines.append(f"{'' if one_pass else s:>18} | {100 * e:6.1f}% | {100 * c:6.1f}%{per}{mark}")
    if not one_pass:
        a = result["adaptive"]
        per = "".join(f" | {100 * g['adaptive']['exact']:6.1f}%" for g in groups.values())
        lines.append(f"{'adaptive halting':>18} | {100 * a['exact']:6.1f}% | {100 * a['cell']:6.1f}%{per}  "
                     f"(mean {a['mean_steps']:.2f} steps)")
    if vote:
        lines.append(f"voted: exact accuracy of the answer most of {vote['k']} symmetric versions of each input give "
                     "(rule-abiding answers first), after each step")
    if "act_hops" in result:  # per-token ACT: mean hops per token, per unit (layer) and per group
        h = result["act_hops"]
        per = "".join(f" | {g['act_hops']['mean']:7.2f}" for g in groups.values())
        lines.append(f"{'ACT hops / token':>18} | {h['mean']:7.2f} | {'':>7}{per}  (per ACT unit: "
                     + ", ".join(f"{v:.2f}" for v in h["per_unit"]) + ")")
    return "\n".join(lines)


def run_of(ckpt: Path) -> Path | None:
    """The run directory holding checkpoint `ckpt` (RUN/ckpt/step_N), or None for a checkpoint folder of its own."""
    parent = Path(ckpt).resolve().parent
    if parent.name == checkpoint.CKPT_DIR and (parent.parent / "config.yaml").exists():
        return parent.parent
    return None


SOURCE = "evaluated.json"  # in an evaluation folder: which checkpoint, with which settings, it holds


def output_dir(ckpt: Path, name: str, settings: dict) -> Path:
    """Where an evaluation of `ckpt` is written when no --out is given: RUN/<name>/ for a checkpoint inside a run
    (a run's newest evaluation is always in one place, whichever checkpoint it was), <ckpt>/<name>/ for a checkpoint
    folder of its own. An earlier evaluation there of another checkpoint or with other settings is first moved, whole,
    to <name>/step_<M>/ (M its checkpoint's step; -2, -3, .. if taken), so nothing is overwritten; the same
    checkpoint evaluated with the same settings is simply written again."""
    run = run_of(ckpt)
    out = (run if run else ckpt) / name
    source = {"checkpoint": str(Path(ckpt).resolve()), "step": checkpoint.load_meta(ckpt).get("step"), **settings}
    if not distributed.world().main:
        return out
    old = None
    if (out / SOURCE).exists():
        try:
            old = json.loads((out / SOURCE).read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
    entries = [e for e in out.iterdir() if not e.name.startswith("step_") and e.name not in (MARKER, LOCK)] \
        if out.is_dir() else []
    if entries and old != source:  # an earlier evaluation (of unknown source when evaluated.json is missing)
        step = (old or {}).get("step")
        base = out / (f"step_{step:08d}" if isinstance(step, int) else "step_unknown")
        keep, i = base, 1
        while keep.exists():
            i += 1
            keep = base.with_name(f"{base.name}-{i}")
        keep.mkdir(parents=True)
        for earlier in entries:
            earlier.rename(keep / earlier.name)
        print(f"kept the earlier evaluation in {keep}", file=sys.stderr)
    Output(out, "eval", force=True, legacy=(SOURCE,))  # inside a run: ponder's folder, links refused
    atomic_write_text(entry(out, SOURCE), json.dumps(source, indent=2))
    return out


def log_to_board(ckpt: Path, res: dict, out_dir: Path, overrides: list[str] = ()) -> None:
    """A run's evaluation in its TensorBoard (RUN/tb), at the checkpoint's step: exact and cell accuracy at N_sup
    (or the one pass), the best over steps, the task's own metrics, the table as text and the pictures written.
    Tags start with the split, and the settings when overrides were given: `test/exact`,
    `test[model.n_latent=8]/exact`."""
    run = run_of(ckpt)
    if run is None or not distributed.world().main:
        return
    step = int(checkpoint.load_meta(ckpt).get("step", 0))
    tag = res.get("split", "test") + (f"[{','.join(overrides)}]" if overrides else "")
    at = res["n_supervision"] - 1 if not res.get("one_pass") else 0
    at = min(at, len(res["exact"]) - 1)
    board = tensorboard(run)
    try:
        board.add_scalar(f"{tag}/exact", res["exact"][at], step)
        board.add_scalar(f"{tag}/cell", res["cell"][at], step)
        board.add_scalar(f"{tag}/best_exact_over_steps", max(res["exact"]), step)
        if not res.get("one_pass"):
            board.add_scalar(f"{tag}/adaptive_exact", res["adaptive"]["exact"], step)
            board.add_scalar(f"{tag}/adaptive_mean_steps", res["adaptive"]["mean_steps"], step)
        for key, value in res.get("task_metrics", {}).items():
            board.add_scalar(f"{tag}/{key}", float(value), step)
        if hasattr(board, "add_text"):
            board.add_text(f"{tag}/table", "    " + format_table(res).replace("\n", "\n    "), step)
            import matplotlib.image

            for png in sorted(out_dir.glob("*.png")) + sorted(out_dir.glob("*/*.png"))[:12]:
                image = matplotlib.image.imread(str(png))[..., :3]
                board.add_image(f"{tag}/{png.relative_to(out_dir).with_suffix('')}", image, step, dataformats="HWC")
    finally:
        board.close()


def load_model(path: str | Path, overrides: list[str] = (), device: str = "cpu", ema: bool = True):
    """(checkpoint dir, config with overrides, model on device in eval mode, the checkpoint's meta.json)."""
    ckpt, cfg = config_from_checkpoint(path, overrides)
    meta_ck = checkpoint.load_meta(ckpt)
    for key, high in (("vocab_size", 10**9), ("seq_len", 2**20), ("num_puzzle_identifiers", 10**9)):  # the build's
        if type(meta_ck.get(key)) is not int or not 1 <= meta_ck[key] <= high:  # sizes (seq_len: rotary tables)
            raise UserError(f"{ckpt}/meta.json: {key} must be an integer in 1..{high}, got {meta_ck.get(key)!r}")
    weights = checkpoint.load_weights(ckpt, ema=ema)
    try:
        model = checkpoint.build_to_fit(lambda: build_model(cfg.model, meta_ck["vocab_size"], meta_ck["seq_len"],
                                                            meta_ck["num_puzzle_identifiers"]), weights, ckpt)
    except RuntimeError as e:
        raise UserError(f"{ckpt}: weights do not fit the model of its config ({str(e).splitlines()[0]})") from None
    model.to(device).eval()
    runtime.set_threads(cfg.train.threads, torch.device(device))  # e.g. 1 when two runs share a 2-core machine
    cfg = runtime.settle_eval_dtype(cfg, overrides, torch.device(device))
    return ckpt, cfg, model, meta_ck


def load_for_eval(path: str | Path, data: str | None = None, overrides: list[str] = (), device: str = "cpu",
                  ema: bool = True, split: str = "test"):
    """(checkpoint dir, config with overrides, model on device, split arrays, metadata, data dir) of a checkpoint."""
    ckpt, cfg = config_from_checkpoint(path, overrides)
    meta_ck = checkpoint.load_meta(ckpt)
    if not (data or meta_ck.get("data")):
        raise UserError(f"{ckpt}: no dataset is recorded with this checkpoint (imported without --data); pass --data DIR")
    data_dir = Path(data) if data else Path(meta_ck["data"])
    arrays, meta = read_split(data_dir, split)
    if (meta.vocab_size, meta.seq_len) != (meta_ck["vocab_size"], meta_ck["seq_len"]):
        raise UserError(f"{data_dir}: vocabulary/length ({meta.vocab_size}, {meta.seq_len}) do not match the "
                        f"checkpoint's ({meta_ck['vocab_size']}, {meta_ck['seq_len']})")
    task_for(cfg.data, meta, data_dir)
    ckpt, cfg, model, _ = load_model(ckpt, overrides, device, ema)
    return ckpt, cfg, model, arrays, meta, data_dir


def adaptive_checkpoint(path: str | Path, data: str | None = None, overrides: list[str] = (),
                        out_dir: str | Path | None = None, device: str = "cpu", ema: bool = True,
                        force: bool = False) -> tuple[dict, Path]:
    """`ponder eval --adaptive`: adaptive-halting evaluation (halted puzzles leave the batch) against the official
    protocol (every puzzle runs N_sup steps), timed on the same machine in the same call: puzzles/s of each, the
    speed-up, and the exact-accuracy points lost. Writes adaptive.json."""
    if out_dir is not None and distributed.world().main:
        Output(out_dir, "eval", force)  # an --out ponder did not make is refused before any work
    ckpt, cfg, model, arrays, meta, data_dir = load_for_eval(path, data, overrides, device, ema)
    if not cfg.model.carries_state:
        raise UserError(f"{ckpt}: --adaptive times adaptive halting over supervision steps; model.family="
                        f"{cfg.model.family} answers in one pass (use ponder eval without --adaptive)")
    fast = evaluate_adaptive(cfg, model, arrays, meta, torch.device(device))
    t0 = time.perf_counter()
    full = evaluate_model(cfg, model, arrays, meta, torch.device(device), max_steps=cfg.model.n_supervision)
    full_s = time.perf_counter() - t0
    res = {"checkpoint": str(ckpt), "n": fast["n"], "n_supervision": cfg.model.n_supervision, "adaptive": fast,
           "full": {"exact": full["exact"][-1], "cell": full["cell"][-1], "seconds": full_s,
                    "puzzles_per_s": fast["n"] / full_s},
           "speedup": fast["puzzles_per_s"] * full_s / fast["n"],
           "exact_points_lost": 100 * (full["exact"][-1] - fast["exact"])}
    out_dir = Path(out_dir) if out_dir else output_dir(ckpt, "eval", {"overrides": list(overrides), "data": str(data_dir),
                                                                       "weights": _weights(ckpt, ema)})
    if distributed.world().main:
        atomic_write_text(entry(out_dir, "adaptive.json"), json.dumps(res, indent=2))
    return res, out_dir


def format_adaptive(res: dict) -> str:
    a, f = res["adaptive"], res["full"]
    return "\n".join([
        f"{res['n']} puzzles, N_sup = {res['n_supervision']}",
        f"  all N_sup steps (official): exact {100 * f['exact']:.1f}%, cell {100 * f['cell']:.1f}%, "
        f"{f['puzzles_per_s']:.1f} puzzles/s",
        f"  adaptive halting (logit > {a['halt_threshold']:g}): exact {100 * a['exact']:.1f}%, cell "
        f"{100 * a['cell']:.1f}%, {a['mean_steps']:.2f} steps on average, {a['puzzles_per_s']:.1f} puzzles/s",
        f"  speed-up x{res['speedup']:.2f}, exact accuracy lost {res['exact_points_lost']:+.2f} points"])


def evaluate_checkpoint(path: str | Path, data: str | None = None, overrides: list[str] = (),
                        out_dir: str | Path | None = None, device: str = "cpu", pictures: int = 1, ema: bool = True,
                        show: int = 0, split: str = "test", outputs: int = 0, force: bool = False) -> tuple[dict, Path]:
    """`ponder eval`: load a checkpoint (EMA weights unless ema=False), evaluate on a split (the test split, or the
    train split to see what was memorised), write JSON/PNG. Overrides may change test-time settings, including the
    recursion (model.n_latent, model.n_cycles). `outputs` > 0 also writes outputs.safetensors: the inputs, labels
    and puzzle ids of the first `outputs` examples and, after every supervision step, their float32 logits
    (steps, examples, seq_len, vocab), q_halt and q_continue (steps, examples; zeros for models without it)."""
    if out_dir is not None and distributed.world().main:
        Output(out_dir, "eval", force)  # an --out ponder did not make is refused before any work
    ckpt, cfg, model, arrays, meta, data_dir = load_for_eval(path, data, overrides, device, ema, split)
    res = evaluate_model(cfg, model, arrays, meta, torch.device(device), keep=max(pictures * 8, show, 0),
                         outputs=outputs)
    kept = res.pop("_kept_predictions", None)
    raw = res.pop("_outputs", None)
    explicit = out_dir is not None
    out_dir = Path(out_dir) if explicit else output_dir(
        ckpt, "eval" if split == "test" else f"eval-{split}",
        {"overrides": list(overrides), "data": str(data_dir), "weights": _weights(ckpt, ema),
         "dtype": cfg.train.dtype})
    if not distributed.world().main:  # under torchrun rank 0 holds the gathered results and writes them
        return res, out_dir
    final = res.pop("_final", None)
    if final is not None and split == "test":  # tasks that pool answers over versions (ARC): voting, pass@k, submission
        task = get_task(cfg.data)
        pooled = task.aggregate(data_dir, arrays, *final, out_dir)
        res["task_metrics"].update(pooled.metrics)
        for name, sheet in pooled.sheets.items():
            plots.draw_sheet(sheet, task.palette, entry(out_dir, f"{name}.png"))
    res["checkpoint"] = str(ckpt)
    res["weights"] = _weights(ckpt, ema)
    res["overrides"] = list(overrides)
    res["data"] = str(data_dir)
    res["split"] = split
    res["dtype"] = cfg.train.dtype  # what train.dtype=auto picked on this machine, or the command line's
    atomic_write_text(entry(out_dir, "results.json"),
                      json.dumps({k: v for k, v in res.items() if not k.startswith("_")}, indent=2))
    if raw is not None:
        write_outputs(raw, arrays, entry(out_dir, "outputs.safetensors"))
    if show and kept is not None:  # the first `show` test examples as text, answered after N_sup steps
        task = get_task(cfg.data)
        step = min(cfg.model.n_supervision, kept.shape[1]) - 1  # N_sup, or the last step run
        texts = [f"test example {i}:\n" + task.render(np.asarray(arrays.inputs[i]), kept[i, step],
                                                      np.asarray(arrays.labels[i])) for i in range(min(show, len(kept)))]
        res["_examples"] = texts
        atomic_write_text(entry(out_dir, "examples.txt"), "\n\n".join(texts) + "\n")
    if cfg.eval.plot:
        if not res.get("one_pass"):  # a one-pass model has no test-time steps to plot
            plots.plot_scaling(res, entry(out_dir, "scaling.png"))
        if pictures and kept is not None and len(kept):
            write_pictures(cfg, arrays, meta, kept, out_dir, pictures)
    if not explicit:  # a run's own evaluation (ponder eval RUN): also in its TensorBoard
        log_to_board(ckpt, res, out_dir, list(overrides))
    return res, out_dir


def _weights(ckpt: Path, ema: bool) -> str:
    return "ema" if ema and (ckpt / "ema.safetensors").exists() else "raw"


def write_outputs(raw: dict, arrays: PuzzleArrays, path: Path) -> None:
    """The raw outputs of the first examples (see evaluate_checkpoint), with what they were computed from."""
    from safetensors.torch import save

    k = raw["q_halt"].shape[1]
    tensors = {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in raw.items()}
    tensors.update(inputs=torch.from_numpy(np.asarray(arrays.inputs[:k]).astype(np.int32)),
                   labels=torch.from_numpy(np.asarray(arrays.labels[:k]).astype(np.int32)),
                   puzzle_identifiers=torch.from_numpy(arrays.example_puzzle_ids[:k].astype(np.int32)))
    with atomic_open(path, "wb") as f:
        f.write(save(tensors))


def write_pictures(cfg: Config, arrays: PuzzleArrays, meta: Metadata, kept: np.ndarray, out_dir: Path,
                   count: int) -> list[Path]:
    """Step-by-step pictures of up to `count` kept examples, preferring ones whose answer changed over the steps."""
    task = get_task(cfg.data)
    n_sup = cfg.model.n_supervision
    labels = np.asarray(arrays.labels[: len(kept)])
    n_sup = min(n_sup, kept.shape[1])
    changed = [i for i in range(len(kept)) if len({tuple(p) for p in kept[i, :n_sup]}) > 1]
    order = changed + [i for i in range(len(kept)) if i not in changed]
    start = task.prompt_length() if task.teacher_forced else None  # cot: the inputs hold the answer; show the prompt
    paths = []
    for j, i in enumerate(order[:count]):
        steps = sorted({s for s in [1, 2, 3, 4, 6, 8, 12, 16, n_sup] if s <= n_sup})
        path = entry(out_dir, f"solving_{j}.png")
        answers = {s: task.grid(kept[i, s - 1]) for s in steps}
        given = np.asarray(arrays.inputs[i]).copy()
        if start is not None:
            given[start:] = 0
        region = task.crop([task.grid(given), task.grid(labels[i]), *answers.values()])
        plots.plot_solving(task.grid(given)[region], task.grid(labels[i])[region],
                           {k: a[region] for k, a in answers.items()}, path, task.palette, task.box,
                           name=f"test example {i}", legend=task.legend)
        paths.append(path)
    return paths


def sweep_checkpoint(path: str | Path, key: str, values: list[str], data: str | None = None,
                     overrides: list[str] = (), out_dir: str | Path | None = None, device: str = "cpu",
                     ema: bool = True, force: bool = False) -> tuple[dict, Path]:
    """`ponder eval --sweep KEY=V1,V2,..`: evaluate one checkpoint once per value of a test-time setting (the
    recursion depth model.n_latent / model.n_cycles, or eval.max_steps) and collect accuracy against it."""
    if not values:
        raise UserError(f"--sweep {key}=: give at least one value, e.g. --sweep model.n_latent=1,2,4,8")
    if out_dir is not None:
        Output(out_dir, "eval", force)  # an --out ponder did not make is refused before any work
    ckpt = checkpoint.find(path)
    out_dir = Path(out_dir) if out_dir else output_dir(ckpt, f"sweep-{key}", {"values": values, "overrides": list(
        overrides), "data": data, "weights": _weights(ckpt, ema)})
    runs = []
    for i, value in enumerate(values):
        print(f"sweep {key}={value} ({i + 1} of {len(values)})", file=sys.stderr, flush=True)
        res, _ = evaluate_checkpoint(ckpt, data, [*overrides, f"{key}={value}"], entry(out_dir, f"{key}={value}"),
                                     device, pictures=0, ema=ema, force=force)
        runs.append({"value": value, **res})
    trained = to_dict(config_from_checkpoint(ckpt)[1])  # the value the weights were trained with, marked in the plot
    for part in key.split("."):
        trained = trained.get(part) if isinstance(trained, dict) else None
    sweep = {"key": key, "checkpoint": str(ckpt), "trained": trained, "runs": runs}
    atomic_write_text(entry(out_dir, "sweep.json"), json.dumps(sweep, indent=2))
    plots.plot_sweep(sweep, entry(out_dir, "sweep.png"))
    return sweep, out_dir


def format_sweep(sweep: dict) -> str:
    """Exact accuracy at N_sup (and per group) against the swept value; the last column is the best over steps."""
    groups = list(sweep["runs"][0].get("groups", {}))
    head = f"{sweep['key']:>18} | {'exact':>7} | {'cell':>7}" + "".join(f" | {g:>7}" for g in groups) + \
        f" | {'best over steps':>15}"
    lines = [f"exact accuracy at N_sup against {sweep['key']} ({sweep['runs'][0]['n']} held-out examples)"
             + ("; per-group columns: exact" if groups else ""), head, "-" * len(head)]
    for run in sweep["runs"]:
        at = min(run["n_supervision"], len(run["steps"])) - 1
        per = "".join(f" | {100 * run['groups'][g]['exact'][at]:6.1f}%" for g in groups)
        best = int(np.argmax(run["exact"]))
        lines.append(f"{run['value']:>18} | {100 * run['exact'][at]:6.1f}% | {100 * run['cell'][at]:6.1f}%{per} | "
                     f"{100 * run['exact'][best]:6.1f}% @ {best + 1:>3}")
    return "\n".join(lines)


def evaluate_during_training(cfg: Config, model, ema, data_dir: Path, device) -> dict:
    """train.eval_every: the test split at N_sup steps, on the EMA weights (`ponder.optim.EMA`, or None) as the
    official code does."""
    arrays, meta = read_split(data_dir, "test")
    backup = None
    if ema is not None:
        backup = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            for p, s in zip(model.parameters(), ema.shadow):
                p.copy_(s)
    res = evaluate_model(cfg, model, arrays, meta, device, max_steps=cfg.model.n_supervision)
    if backup is not None:
        with torch.no_grad():
            for p, b in zip(model.parameters(), backup):
                p.copy_(b)
    model.train()
    out = {"eval_exact": res["exact"][-1], "eval_cell": res["cell"][-1],
           "eval_adaptive_exact": res["adaptive"]["exact"], "eval_adaptive_steps": res["adaptive"]["mean_steps"]}
    return {**out, **group_exact(res)}


def group_exact(res: dict) -> dict[str, float]:
    """Exact match per group of a result at its last step, as `eval_exact[<group>]` (1dCA: `eval_exact[k=1]`, from
    the k strata, or from the task's per-state metrics `exact k=1` of cot / oo, which answer every k)."""
    out = {f"eval_exact[{g}]": v["exact"][-1] for g, v in res.get("groups", {}).items()}
    out.update({f"eval_exact[{key[len('exact '):]}]": v for key, v in res.get("task_metrics", {}).items()
                if key.startswith("exact ")})
    return out


def exact_by_group(row: dict) -> dict[str, float]:
    """The inverse of `group_exact` on a logged evaluation row: {group: exact} ({"k=1": 0.94, ...}; {} without
    groups). Readers of metrics.jsonl (the study's learning curves) use this, not the key format."""
    return {key[len("eval_exact["):-1]: v for key, v in row.items() if key.startswith("eval_exact[")}


def scores_of(result: dict, group: str) -> tuple[float, float] | None:
    """(exact, cell accuracy) of one group of an evaluation result (results.json): its stratum (one group per
    example, e.g. k=1) at N_sup, or the task's per-group metrics (1dCA cot / oo: `exact k=1`, every example answers
    every k); None when the result has no such group."""
    stratum = result.get("groups", {}).get(group)
    if stratum is not None:
        at = min(result["n_supervision"], len(stratum["exact"])) - 1
        return stratum["exact"][at], stratum["cell"][at]
    metrics = result.get("task_metrics", {})
    if f"exact {group}" in metrics:
        return metrics[f"exact {group}"], metrics[f"cell {group}"]
    return None
