"""Evaluating a retrofitted recurrent LM as test-time depth grows: GSM8K accuracy and answer perplexity against R.

- Accuracy: greedy decoding (`RecurrentLM.generate`, KV cache, optional per-token KL exit) of
  "Question: {q}\nAnswer:" (0-shot, the training format of `ponder.lm.data`), stopped at EOS or at "\nQuestion:";
  the final answer is extracted by `ponder.lm.data.extract_answer` (number after the last "####", else the last
  number) and compared with the reference's "#### N" after the same normalisation. The paper uses lm-eval's 1-shot
  gsm8k-cot with a "The answer is X" regex (reference 2.6); a model fine-tuned on our format answers "#### N".
- Mean loops: with lm.exit_threshold > 0 each token stops looping once successive loops' output distributions differ
  by less than that KL (Huginn), and the table reports the mean loops used (never more than R).
- Perplexity: exp(mean next-token NLL) on the reference solutions of the same test problems given their prompts,
  at num_steps = R (the "validation loss vs R" of the paper, on held-out text we have locally).
Outputs: a table on stdout, results.json, completions.jsonl and lm_scaling.png (accuracy and perplexity vs R, log2 x).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from ponder import UserError, checkpoint, plots, runtime
from ponder.config import Config, changed_keys
from ponder.files import Output, atomic_write_text, entry, open_no_follow, refuse_link
from ponder.lm.data import STOP, Problem, collate, extract_answer, load_gsm8k, pad_id, prompt_ids, task_example
from ponder.lm.train import MODEL_FIELDS, build_lm, lm_loss
from ponder.progress import progress as progress_of
from ponder.run import config_from_checkpoint

GEN_CHUNK = 48  # new tokens per generate() call; between calls the text is checked for STOP (the model's
#                 generate stops at EOS only, and an untrained model rarely emits it)
EVAL_SEED = 0  # seed of the initial-state noise in perplexity forwards (same noise at every R)


def load_lm(path: str | Path, overrides: list[str] = ()) -> tuple[torch.nn.Module, object, Config, Path]:
    """The model of a `ponder lm` checkpoint (or run directory), its tokenizer, the config with `overrides`."""
    ckpt, cfg = config_from_checkpoint(path, overrides)
    if checkpoint.load_meta(ckpt).get("kind") != "lm":
        raise UserError(f"{ckpt}: not a `ponder lm` checkpoint (use `ponder eval` for puzzle models)")
    changed = changed_keys(checkpoint.load_config(ckpt), cfg, tuple(f"lm.{f}" for f in MODEL_FIELDS))
    if changed:
        raise UserError(f"{ckpt}: {', '.join(changed)} define the checkpoint's weights and cannot be overridden")
    model, tokenizer = build_lm(cfg.lm)
    checkpoint.load_into(model, checkpoint.load_weights(ckpt, ema=False), ckpt)
    return model, tokenizer, cfg, ckpt


@torch.no_grad()
def answer(model, tokenizer, question: str, num_steps: int, max_new_tokens: int,
           exit_threshold: float = 0.0) -> tuple[str, int, float, str, str]:
    """Greedy completion of the prompt -> (text cut at STOP, new tokens, mean loops per token, why it ended: "eos",
    "stop" (the text reached STOP) or "length" (max_new_tokens), the raw decoded tokens, special ones included)."""
    device = next(model.parameters()).device
    ids = prompt_ids(tokenizer, question)
    new: list[int] = []
    loops = 0.0
    while len(new) < max_new_tokens:
        x = torch.tensor([ids + new], device=device)
        got, stats = model.generate(x, min(GEN_CHUNK, max_new_tokens - len(new)), num_steps, use_cache=True,
                                    exit_threshold=exit_threshold or None, eos_token_id=tokenizer.eos_token_id)
        loops += stats["mean_steps"] * len(got)
        new += list(got)
        text = tokenizer.decode(new, skip_special_tokens=True)
        if not got or STOP in text or (tokenizer.eos_token_id is not None and tokenizer.eos_token_id in got):
            break
    full = tokenizer.decode(new, skip_special_tokens=True)
    eos = tokenizer.eos_token_id is not None and tokenizer.eos_token_id in new
    why = "stop" if STOP in full else "eos" if eos else "length"
    return full.split(STOP)[0], len(new), loops / max(1, len(new)), why, tokenizer.decode(new)


@torch.no_grad()
def perplexity(model, tokenizer, problems: list[Problem], num_steps: int, cfg: Config, batch_size: int = 8) -> float:
    """exp(mean NLL per answer token) of the whole reference solutions given their prompts, at num_steps loops."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(EVAL_SEED)
    total, count = 0.0, 0
    for i in range(0, len(problems), batch_size):
        ids, labels = collate([task_example(tokenizer, p) for p in problems[i:i + batch_size]],
                              pad_id(tokenizer))
        with runtime.autocast(cfg.train.dtype, device):
            out = model(ids.to(device), num_steps=num_steps, generator=gen)
        loss, n = lm_loss(out.logits, labels.to(device))
        total, count = total + loss.item() * n, count + n
    return math.exp(total / max(1, count))


def evaluate_lm(model, tokenizer, cfg: Config, problems: list[Problem], out_dir: str | Path,
                progress: bool = True) -> dict:
    """The sweep over lm.eval_recurrences: accuracy, mean loops, perplexity, tokens/s; writes JSON, JSONL, PNG."""
    lc = cfg.lm
    out_dir = Path(out_dir)
    refuse_link(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    res = {"n": len(problems), "recurrences": lc.recurrences(), "accuracy": [], "mean_loops": [], "perplexity": [],
           "tokens_per_s": [], "train_mean_recurrence": lc.mean_recurrence, "exit_threshold": lc.exit_threshold,
           "max_new_tokens": lc.max_new_tokens}
    with open_no_follow(entry(out_dir, "completions.jsonl"), "w") as f:
        for r in res["recurrences"]:
            correct, loops, tokens, t = 0, 0.0, 0, time.perf_counter()
            for i, p in progress_of(enumerate(problems), len(problems), f"GSM8K at R = {r}", enabled=progress):
                text, n_new, mean_loops, why, raw = answer(model, tokenizer, p.question, r, lc.max_new_tokens,
                                                           lc.exit_threshold)
                pred = extract_answer(text)
                correct += pred == p.answer
                loops += mean_loops * n_new
                tokens += n_new
                f.write(json.dumps({"R": r, "index": i, "question": p.question, "answer": p.answer,
                                    "prediction": pred, "completion": text, "new_tokens": n_new, "ended": why,
                                    "raw": raw}) + "\n")
            seconds = time.perf_counter() - t
            f.flush()  # one R at a time: a long sweep shows its completions as it goes
            res["accuracy"].append(correct / max(1, len(problems)))
            res["mean_loops"].append(loops / max(1, tokens))
            res["tokens_per_s"].append(tokens / seconds)
            res["perplexity"].append(perplexity(model, tokenizer, problems, r, cfg))
            if progress:
                print(f"R={r}: accuracy {100 * res['accuracy'][-1]:.1f}%, perplexity {res['perplexity'][-1]:.3f}, "
                      f"{res['tokens_per_s'][-1]:.1f} tok/s", flush=True)
    atomic_write_text(entry(out_dir, "results.json"), json.dumps(res, indent=2))
    plots.plot_lm_scaling(res, entry(out_dir, "lm_scaling.png"))
    return res


def format_lm_table(res: dict) -> str:
    head = f"{'R (loops)':>9} | {'GSM8K acc':>9} | {'mean loops':>10} | {'answer ppl':>10} | {'tok/s':>7}"
    lines = [f"GSM8K (first {res['n']} test problems), greedy, trained with mean r_bar = "
             f"{res['train_mean_recurrence']}" + (f", exit at KL < {res['exit_threshold']:g}" if res["exit_threshold"]
                                                 else ""), head, "-" * len(head)]
    for i, r in enumerate(res["recurrences"]):
        mark = "  (beyond training)" if r > res["train_mean_recurrence"] else ""
        lines.append(f"{r:>9} | {100 * res['accuracy'][i]:8.1f}% | {res['mean_loops'][i]:10.2f} | "
                     f"{res['perplexity'][i]:10.3f} | {res['tokens_per_s'][i]:7.1f}{mark}")
    return "\n".join(lines)


def evaluate_lm_checkpoint(path: str | Path, overrides: list[str] = (), out_dir: str | Path | None = None,
                           progress: bool = True, force: bool = False) -> tuple[dict, Path]:
    """`ponder lm eval`: load, sweep R on the first lm.eval_examples problems of lm.eval_data, write the outputs
    (into `out_dir`: a folder ponder made, or an empty one; another only with `force`, beside what is there)."""
    if out_dir is not None:
        Output(out_dir, "eval", force)
    model, tokenizer, cfg, ckpt = load_lm(path, overrides)
    if not cfg.lm.eval_data:
        raise UserError("lm.eval_data is empty: give the GSM8K test JSONL, e.g. "
                        "lm.eval_data=../shared/data/gsm8k/test.jsonl")
    problems = load_gsm8k(cfg.lm.eval_data, limit=cfg.lm.eval_examples)
    device = runtime.resolve_device(cfg.train.device)
    model.to(device)
    runtime.set_threads(cfg.train.threads, device)
    cfg = runtime.settle_eval_dtype(cfg, overrides, device)
    out = Path(out_dir) if out_dir else ckpt / "lm_eval"
    return evaluate_lm(model, tokenizer, cfg, problems, out, progress), out
