"""`ponder bench`: throughput of the TRM training step and evaluation, against the machine's matmul ceiling.

Measured in one run (so the ceiling and the model see the same machine state):
- the ceiling: best GFLOP/s of a square `torch.mm` (fp32, and bf16) at a size large enough to saturate the cores;
- training: examples/s (slots x optimiser steps / s) of the full step (forward, loss, backward, Adam-atan2, EMA)
  for the paper's TRM-MLP Sudoku config (hidden 512, batch 32) and a small config (hidden 128, batch 64);
  achieved GFLOP/s = the step's FLOPs, counted by torch's FlopCounterMode (matmuls and attention, forward and
  backward), divided by its time, and the ratio to the ceiling;
- evaluation: puzzles/s of a full N_sup-step forward (16 for the paper configs) in inference mode.
This is a benchmark, never a test: figures go to JSON and the README.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from ponder.config import ModelConfig
from ponder.models import build_model, count_params
from ponder.models.act import act_loss
from ponder.optim import EMA, AdamAtan2

CONFIGS = {
    # name: (model config, batch, vocab, seq_len)
    "trm-mlp-h512-b32 (paper Sudoku)": (ModelConfig(mixer="mlp", pos_encoding="none"), 32, 11, 81),
    "trm-mlp-h128-b64 (small)": (ModelConfig(mixer="mlp", pos_encoding="none", hidden=128, n_heads=4), 64, 11, 81),
    "demo (trm-mlp-h64, 6x6, n=2 T=1)": (ModelConfig(mixer="mlp", pos_encoding="none", hidden=64, n_heads=2, n_latent=2,
                                                   n_cycles=1, n_supervision=8, puzzle_emb_len=1, puzzle_emb=False), 128, 8, 36),
}


def matmul_ceiling(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def _step_fn(model, opt, ema, batch: int, vocab: int, seq_len: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(1, vocab, (batch, seq_len), generator=g)
    labels = torch.randint(1, vocab, (batch, seq_len), generator=g)
    ids = torch.zeros(batch, dtype=torch.long)
    state = [model.initial_state(batch, "cpu")]

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = model(state[0], inputs, ids)
            loss = act_loss(out, labels)
        (loss.total / batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update()
        state[0] = out.state

    return step


def _time(fn, seconds: float, warmup: int = 1, min_reps: int = 2) -> float:
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while n < min_reps or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench_config(cfg: ModelConfig, batch: int, vocab: int, seq_len: int, dtype: torch.dtype, seconds: float) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg, vocab, seq_len).train()
    opt = AdamAtan2(model.parameters(), lr=1e-4, weight_decay=0.1)
    ema = EMA(list(model.parameters()), 0.999)
    step = _step_fn(model, opt, ema, batch, vocab, seq_len, dtype)
    flops = count_flops(step)
    dt = _time(step, seconds)

    model.eval()
    inputs = torch.randint(1, vocab, (batch, seq_len))
    ids = torch.zeros(batch, dtype=torch.long)

    @torch.inference_mode()
    def evaluate():
        state = model.initial_state(batch, "cpu")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            for _ in range(cfg.n_supervision):  # the official evaluator's full N_sup steps
                state = model(state, inputs, ids).state

    dt_eval = _time(evaluate, seconds, warmup=0, min_reps=1)
    return {"params": count_params(model), "batch": batch, "step_s": dt, "train_examples_per_s": batch / dt,
            "step_gflop": flops / 1e9, "train_gflops": flops / dt / 1e9,
            "eval_nsup_puzzles_per_s": batch / dt_eval}


def bench_puzzle_embedding(rows: int, dim: int = 512, batch: int = 768, seconds: float = 2.0) -> dict:
    """One training step of the sparse puzzle-identifier table (gather -> backward -> sign-SGD on the batch's rows),
    for a table of `rows` identifiers (ARC-1: ~961K). Time and per-step allocation should not depend on `rows`."""
    from ponder.models.layers import SparseEmbedding
    from ponder.optim import SignSGD

    emb = SparseEmbedding(rows, dim).train()
    emb.weight.fill_(0.0)  # touch every page once: a fresh zero table is mapped lazily, first writes page-fault
    opt = SignSGD(emb, lr=1e-2, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    target = torch.randn(batch, dim, generator=g)

    def step():
        ids = torch.randint(0, rows, (batch,), generator=g)
        ((emb(ids) - target) ** 2).sum().backward()
        opt.step()

    dt = _time(step, seconds, warmup=2)
    return {"rows": rows, "dim": dim, "batch": batch, "table_mb": emb.weight.numel() * 4 / 2**20, "step_ms": 1000 * dt,
            "step_tensors_mb": batch * dim * 4 * 4 / 2**20}  # gathered rows, their grad, per-id sums, new rows


def run_bench(out: str | Path, quick: bool = False, compare: str | None = None) -> dict:
    seconds = 2.0 if quick else 6.0
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "torch": torch.__version__, "threads": torch.get_num_threads()}, "runs": {}}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).split(".")[-1]
        ceiling = matmul_ceiling(dtype)
        result["runs"][name] = {"matmul_ceiling_gflops": ceiling, "configs": {}}
        print(f"[{name}] matmul ceiling {ceiling:.1f} GFLOP/s (torch.mm 2048^2)")
        for label, (cfg, batch, vocab, seq_len) in CONFIGS.items():
            r = bench_config(cfg, batch, vocab, seq_len, dtype, seconds)
            r["ceiling_ratio"] = r["train_gflops"] / ceiling
            result["runs"][name]["configs"][label] = r
            print(f"  {label:34s} {r['params']:>10,} w | train {r['train_examples_per_s']:8.1f} ex/s "
                  f"{r['train_gflops']:6.1f} GFLOP/s ({100 * r['ceiling_ratio']:4.1f}% of ceiling) | "
                  f"eval (N_sup steps) {r['eval_nsup_puzzles_per_s']:8.1f} puzzles/s")
    result["puzzle_embedding"] = []
    print("sparse puzzle embedding (dim 512, batch 768): one sign-SGD step against the table size")
    for rows in (1_000, 100_000, 1_000_000):
        r = bench_puzzle_embedding(rows, seconds=seconds / 3)
        result["puzzle_embedding"].append(r)
        print(f"  {rows:>9,} rows ({r['table_mb']:7.1f} MB table): {r['step_ms']:6.2f} ms/step")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    if compare:
        from ponder import UserError

        try:
            old = json.loads(Path(compare).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{compare}: not a bench JSON ({e.__class__.__name__})") from None
        for dname, run in result["runs"].items():
            for label, r in run["configs"].items():
                o = old.get("runs", {}).get(dname, {}).get("configs", {}).get(label)
                if o:
                    print(f"  [{dname}] {label}: train x{r['train_examples_per_s'] / o['train_examples_per_s']:.2f}, "
                          f"eval x{r['eval_nsup_puzzles_per_s'] / o['eval_nsup_puzzles_per_s']:.2f} vs {compare}")
    return result
