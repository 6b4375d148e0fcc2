"""`ponder bench`: training and evaluation throughput of every model family against the machine's matmul ceiling.

Measured in one run, so that the ceiling and the models see the same machine state:
- the ceiling: best GFLOP/s of a square matmul (`torch.mm` 2048^2) on the device, per dtype, at the start and
  again right before each config (the ratio uses the latter: a shared machine's speed drifts within a run);
- for each family at its paper Sudoku-Extreme config (the shipped preset: TRM-MLP, TRM-Att, HRM, URM, the 8-layer
  Transformer) and at a small config (hidden 128): the trainer's own step (`ponder.trainer.supervision_step` + `update`:
  forward through every recursion, loss, backward, clipping, the preset's optimiser, the sparse puzzle table, EMA),
  as training examples/s (slots x steps / s); its FLOPs counted with `torch.utils.flop_counter`'s formulas
  (matmuls and attention, forward and backward) give the achieved GFLOP/s and its ratio to the ceiling;
- the kernel bound: each FLOP-counted call of the step (every matmul/attention shape) timed alone; their sum is
  the step's time without any other work, so "share of the kernel bound" says how much is overhead (element-wise
  ops, copies, allocation, Python) and the bound's GFLOP/s says what the shapes themselves allow;
- evaluation examples/s: all N_sup supervision steps (the official protocol) in inference mode;
- peak memory of the step: on CUDA `max_memory_allocated`; on Linux CPUs the process's resident high-water mark
  (VmHWM, reset before each config through /proc/self/clear_refs), which includes the interpreter and libraries.
- bf16 (autocast) runs where the device multiplies bf16 at least at a quarter of its fp32 rate (CUDA, CPUs with
  AMX/AVX512-BF16); elsewhere it is skipped with the reason.
`--checkpoint RUN` adds the adaptive-halting evaluation of a trained model against all N_sup steps (speed-up and
exact-accuracy cost). `--compare OLD.json` prints ratios against an earlier run. A benchmark, never a test.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from ponder import UserError
from ponder.act import Carry, empty_carry
from ponder.config import resolve
from ponder.files import atomic_write_text
from ponder.models import build_model, count_params

SUDOKU_VOCAB, SUDOKU_CELLS = 11, 81
FAMILIES = {  # name: preset of the paper config; the small config is the same with hidden 128
    "trm-mlp": "sudoku-extreme-trm-mlp",
    "trm-att": "sudoku-extreme-trm-att",
    "hrm": "sudoku-extreme-hrm",
    "urm": "sudoku-extreme-urm",
    "transformer": "sudoku-extreme-transformer",
}
SMALL = ["model.hidden=128", "model.n_heads=4"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_ceiling(dtype: torch.dtype, device: torch.device, n: int = 2048, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    torch.mm(a, b)
    _sync(device)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        for _ in range(10 if device.type == "cuda" else 1):
            torch.mm(a, b)
        _sync(device)
        best = max(best, (10 if device.type == "cuda" else 1) * 2 * n**3 / (time.perf_counter() - t) / 1e9)
        if device.type == "cpu" and best < 5 and time.perf_counter() > t_end - seconds + 0.5:
            break  # a crawling dtype (bf16 without bf16 units): one sample says enough
    return best


def _time(fn, seconds: float, device: torch.device, warmup: int = 1, min_reps: int = 2) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while n < min_reps or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    _sync(device)
    return (time.perf_counter() - t0) / n


class KernelLog(TorchDispatchMode):
    """Records every call of an op that `FlopCounterMode` counts (matmuls, attention, convolutions) with the shapes,
    strides and dtypes of its arguments and the FLOPs of the call, so that `kernel_bound` can time each on its own."""

    def __init__(self):
        from torch.utils.flop_counter import flop_registry

        super().__init__()
        self.formulas = flop_registry  # op packet -> FLOPs of a call
        self.calls: dict[tuple, list] = {}  # key -> [op, args spec, kwargs spec, count, flops of one call]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.formulas.get(func.overloadpacket)
        if formula is not None:
            spec_args, spec_kwargs = tree_map(_spec, args), tree_map(_spec, kwargs)
            key = (func, repr(spec_args), repr(spec_kwargs))
            if key not in self.calls:
                self.calls[key] = [func, spec_args, spec_kwargs, 0, formula(*args, **kwargs, out_val=out)]
            self.calls[key][3] += 1
        return out

    @property
    def flops(self) -> int:
        return sum(count * flops for _, _, _, count, flops in self.calls.values())


class _TensorSpec(tuple):
    """(shape, stride, dtype, device) of a tensor argument, rebuilt with random values by `_materialise`."""


def _spec(a):
    return _TensorSpec((tuple(a.shape), a.stride(), a.dtype, a.device)) if isinstance(a, torch.Tensor) else a


def _materialise(a):
    if not isinstance(a, _TensorSpec):
        return a
    shape, stride, dtype, device = a
    size = 1 + sum((n - 1) * st for n, st in zip(shape, stride)) if all(shape) else 0  # expanded (stride 0) too
    base = torch.empty(size, dtype=dtype, device=device)
    return (base.normal_() if dtype.is_floating_point else base.zero_()).as_strided(shape, stride)


def kernel_bound(log: KernelLog, device: torch.device, seconds: float = 0.05) -> float:
    """Seconds the logged calls take when each runs alone on fresh inputs of its shapes (best of several runs of
    each distinct call, times its count): the step's time if nothing but its FLOP-counted kernels ran. Its FLOPs
    over this time are the rate the step's own shapes allow; GEMMs with a 97-wide side (TRM-MLP's sequence mixing)
    run far below the 2048^2 ceiling, so this, not the ceiling, is what lean code can reach."""
    total = 0.0
    with torch.no_grad():
        for func, spec_args, spec_kwargs, count, _ in log.calls.values():
            args, kwargs = tree_map(_materialise, spec_args), tree_map(_materialise, spec_kwargs)
            func(*args, **kwargs)
            _sync(device)
            best, t_end, reps = float("inf"), time.perf_counter() + seconds, 0
            while reps < 3 or time.perf_counter() < t_end:
                t = time.perf_counter()
                func(*args, **kwargs)
                _sync(device)
                best, reps = min(best, time.perf_counter() - t), reps + 1
            total += count * best
    return total


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    import ctypes
    import gc

    gc.collect()
    try:  # hand freed heap back to the OS first, so that the high-water mark starts from the live memory
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS
    except OSError:
        pass


def _peak_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _time_pair(a, b, seconds: float, device: torch.device, rounds: int = 6) -> tuple[float, float, float]:
    """Seconds per call of `a` and of `b`, timed in alternation (a b b a a b ...) so that both see the same drift of
    a shared machine: the median over `rounds` rounds of each, every round at least seconds / rounds long, and the
    median of the rounds' ratios b / a (each ratio from two neighbouring timings: robust to drift between rounds)."""
    times_a, times_b = [], []
    for i in range(rounds):  # rounds >= 3: the median of three drops one outlier
        first, second = (a, b) if i % 2 == 0 else (b, a)  # neither always runs first
        t_first = _time(first, seconds / rounds, device, warmup=0, min_reps=1)
        t_second = _time(second, seconds / rounds, device, warmup=0, min_reps=1)
        times_a.append(t_first if first is a else t_second)
        times_b.append(t_second if first is a else t_first)
    ratios = sorted(tb / ta for ta, tb in zip(times_a, times_b))
    return sorted(times_a)[rounds // 2], sorted(times_b)[rounds // 2], ratios[rounds // 2]


def bench_config(preset: str, overrides: list[str], batch: int, dtype: torch.dtype, device: torch.device,
                 seconds: float, compile_backend: str = "off", vs_official: bool = True) -> dict:
    """One family/config: the trainer's step and an N_sup-step evaluation on random Sudoku-shaped batches. For TRM,
    `vs_official` also times the official step's structure (`ponder.official_step`) in alternation with it. With a
    compile backend both are compiled (the official `pretrain.py` compiles its model by default), and the compiled
    step is also timed against ponder's eager one (`compiled_vs_eager`): whether compiling pays here."""
    from ponder.optim import EMA, SignSGD, build_optimizer
    from ponder.runtime import autocast, compile_model
    from ponder.trainer import supervision_step, update

    name = "bfloat16" if dtype == torch.bfloat16 else "float32"
    cfg = resolve(preset, [*overrides, f"train.batch_size={batch}", f"train.dtype={name}",
                           f"train.device={device.type}"])
    tc, mc = cfg.train, cfg.model
    torch.manual_seed(0)
    model = build_model(mc, SUDOKU_VOCAB, SUDOKU_CELLS, 1).to(device).train()
    step_model = compile_model(model, compile_backend) if compile_backend != "off" else model
    params = list(model.parameters())
    opt = build_optimizer(model, tc)
    emb_opt = SignSGD(model.puzzle_emb, tc.puzzle_emb_lr, tc.puzzle_emb_weight_decay) if model.puzzle_emb else None
    ema = EMA(params, tc.ema_rate) if tc.ema else None
    gen = torch.Generator(device=device).manual_seed(0)
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(1, SUDOKU_VOCAB, (batch, SUDOKU_CELLS), generator=g).to(device)
    labels = torch.randint(1, SUDOKU_VOCAB, (batch, SUDOKU_CELLS), generator=g).to(device)
    c0 = empty_carry(model, batch, SUDOKU_CELLS, device)
    carry = [Carry(c0.state, c0.steps, torch.zeros_like(c0.halted), inputs, labels, c0.puzzle_ids)]

    def step(through=step_model):  # slots are never refilled: a step's compute does not depend on the examples held
        out, carry[0], loss = supervision_step(through, model, carry[0], cfg, device, gen)
        update(loss, batch, params, tc, opt, emb_opt, ema)

    _reset_peak(device)
    step()  # warm-up (and compilation)
    from ponder.official_step import covers, official_step

    official = None
    if vs_official and covers(mc):
        official = official_step(cfg, SUDOKU_VOCAB, SUDOKU_CELLS, inputs, labels, dtype, compile_backend)
        official()
        dt, dt_official, vs = _time_pair(step, official, seconds, device, rounds=3 if seconds <= 1 else 6)
    else:
        dt = _time(step, seconds, device, warmup=0)
    peak = _peak_mb(device)
    compiled_vs_eager = None
    if step_model is not model:  # does compiling pay here? the compiled step against the eager one, alternated
        def eager_step():
            step(model)

        eager_step()
        compiled_vs_eager = _time_pair(step, eager_step, seconds, device, rounds=3 if seconds <= 1 else 6)[2]

    model.eval()
    ids = torch.zeros(batch, dtype=torch.long, device=device)

    @torch.inference_mode()
    def evaluate():
        state = model.initial_state(batch, device)
        with autocast(name, device):
            for _ in range(mc.n_supervision):  # the official evaluator's N_sup steps
                state = model(state, inputs, ids).state

    dt_eval = _time(evaluate, seconds, device, warmup=1 if device.type == "cuda" else 0, min_reps=1)
    out = {"preset": preset, "overrides": overrides, "params": count_params(model), "batch": batch,
           "n_supervision": mc.n_supervision, "step_s": dt, "train_examples_per_s": batch / dt,
           "eval_examples_per_s": batch / dt_eval, "peak_mb": peak}
    if official is not None:
        out.update(official_examples_per_s=batch / dt_official, vs_official=vs)
    if compiled_vs_eager is not None:
        out["compiled_vs_eager"] = compiled_vs_eager
    model.train()
    log = KernelLog()  # the eager step (a dispatch mode does not see inside compiled graphs), after the timing
    with log:
        update(supervision_step(model, model, carry[0], cfg, device, gen)[2], batch, params, tc, opt, emb_opt, ema)
    kernel_s = kernel_bound(log, device)
    out.update(step_gflop=log.flops / 1e9, train_gflops=log.flops / dt / 1e9, kernel_s=kernel_s,
               kernel_bound_gflops=log.flops / kernel_s / 1e9, kernel_share=kernel_s / dt)
    return out


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

    dt = _time(step, seconds, torch.device("cpu"), warmup=2)
    return {"rows": rows, "dim": dim, "batch": batch, "table_mb": emb.weight.numel() * 4 / 2**20, "step_ms": 1000 * dt,
            "step_tensors_mb": batch * dim * 4 * 4 / 2**20}  # gathered rows, their grad, per-id sums, new rows


def _config_line(label: str, r: dict, batch: int, ceiling: float, compile_backend: str) -> str:
    """One measured configuration as `ponder bench` prints it."""
    peak = f"{r['peak_mb']:7.0f} MB" if r["peak_mb"] is not None else "      n/a"
    both = " compiled" if compile_backend != "off" else ""
    vs = (f" (official structure{both} {r['official_examples_per_s']:.1f}: x{r['vs_official']:.2f})"
          if "vs_official" in r else "")
    if "compiled_vs_eager" in r:
        vs += f" (compiled: x{r['compiled_vs_eager']:.2f} the eager step)"
    return (f"  {label:18s} {r['params']:>11,} w b{batch:<4d}| train {r['train_examples_per_s']:8.1f} ex/s{vs} "
            f"{r['train_gflops']:7.1f} GFLOP/s ({100 * r['ceiling_ratio']:4.1f}% of ceiling {ceiling:.0f}, "
            f"{100 * r['kernel_share']:4.1f}% of its kernels' bound {r['kernel_bound_gflops']:.0f}) | eval "
            f"{r['eval_examples_per_s']:8.1f} ex/s (N_sup={r['n_supervision']}) | peak {peak}")


def _choices(device: str, families: str, sizes: str, dtypes: str) -> tuple[torch.device, list, list, list]:
    """`ponder bench`'s options checked: (device, families, sizes, precisions), or one line naming the bad one."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here")
    chosen = [f for f in families.split(",") if f] or list(FAMILIES)
    unknown = [f for f in chosen if f not in FAMILIES]
    if unknown:
        raise UserError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                        f"choose from {', '.join(FAMILIES)}")
    size_list = [s for s in sizes.split(",") if s]
    if not size_list or any(s not in ("paper", "small") for s in size_list):
        raise UserError(f"--sizes takes paper and/or small, got {sizes!r}")
    dtype_list = [d for d in dtypes.split(",") if d]
    if not dtype_list or any(d not in ("float32", "bfloat16") for d in dtype_list):
        raise UserError(f"--dtypes takes float32 and/or bfloat16, got {dtypes!r}")
    return dev, chosen, size_list, dtype_list


def run_bench(out: str | Path, quick: bool = False, compare: str | None = None, families: str = "",
              device: str = "", checkpoint: str | None = None, compile_backend: str = "off",
              sizes: str = "paper,small", halt_threshold: float = 0.0, official: bool = True,
              dtypes: str = "float32,bfloat16") -> dict:
    dev, chosen, size_list, dtype_list = _choices(device, families, sizes, dtypes)
    old = _load_old(compare) if compare else None  # a bad --compare file fails before minutes of measuring
    from ponder.runtime import check_compile_backend, compile_refusal, keep_freed_memory, resolve_dtype

    check_compile_backend(compile_backend)  # and so does an unknown --compile backend
    heap_reuse = dev.type == "cpu" and keep_freed_memory()  # as `ponder train` / `eval` run on CPUs
    seconds = 1.0 if quick else 4.0
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                          "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "compile": compile_backend, "cpu_heap_reuse": heap_reuse}, "runs": {}}
    auto, why = resolve_dtype("auto", dev)
    result["machine"]["auto_dtype"] = auto
    print(f"train.dtype=auto picks {auto} here ({why})", flush=True)
    ceilings = {}
    for name in ("float32", "bfloat16"):
        dtype = torch.float32 if name == "float32" else torch.bfloat16
        if name not in dtype_list and not (name == "float32" and "bfloat16" in dtype_list):
            continue
        ceilings[name] = matmul_ceiling(dtype, dev)
        run = result["runs"][name] = {"matmul_ceiling_gflops": ceilings[name], "configs": {}}
        print(f"[{name}] matmul ceiling {ceilings[name]:.1f} GFLOP/s (torch.mm 2048^2 on {dev.type})", flush=True)
        if name == "bfloat16" and ceilings[name] < ceilings["float32"] / 4:
            run["skipped"] = (f"bf16 matmuls run at {ceilings[name]:.1f} GFLOP/s here against "
                              f"{ceilings['float32']:.1f} in fp32 (no bf16 units): bf16 training would only be slower")
            print(f"  skipped: {run['skipped']}")
            continue
        if name not in dtype_list:  # fp32's ceiling only, to judge bf16's
            del result["runs"][name]
            continue
        refusal = compile_refusal(compile_backend, name, dev)
        if refusal:
            run["skipped"] = refusal
            print(f"  skipped: {refusal}")
            continue
        todo = [(fam, size) for fam in chosen for size in size_list]
        t_start = time.perf_counter()
        for i, (fam, size) in enumerate(todo):
            batch = (32 if size == "paper" else 64) if dev.type == "cpu" else 768
            label = f"{fam} {size}"
            spent = time.perf_counter() - t_start
            eta = f", ETA {spent / i * (len(todo) - i) / 60:.1f} min for {name}" if i else ""
            print(f"  measuring {label} ({i + 1} of {len(todo)}{eta}) ...", file=sys.stderr, flush=True)
            ceiling = matmul_ceiling(dtype, dev, seconds=1.0)  # again here: a shared machine's speed drifts
            r = bench_config(FAMILIES[fam], [] if size == "paper" else SMALL, batch, dtype, dev, seconds,
                             compile_backend, official)
            r["ceiling_gflops"], r["ceiling_ratio"] = ceiling, r["train_gflops"] / ceiling
            run["configs"][label] = r
            print(_config_line(label, r, batch, ceiling, compile_backend), flush=True)
    result["puzzle_embedding"] = []
    print("sparse puzzle embedding (dim 512, batch 768, CPU): one sign-SGD step against the table size")
    for rows in (1_000, 100_000, 1_000_000):
        r = bench_puzzle_embedding(rows, seconds=seconds / 2)
        result["puzzle_embedding"].append(r)
        print(f"  {rows:>9,} rows ({r['table_mb']:7.1f} MB table): {r['step_ms']:6.2f} ms/step")
    if checkpoint:
        from ponder.evaluate import adaptive_checkpoint, format_adaptive

        res, _ = adaptive_checkpoint(checkpoint, overrides=[f"eval.halt_threshold={halt_threshold}"],
                                     device=dev.type)
        result["adaptive_eval"] = res
        print("adaptive halting on " + checkpoint + ":\n" + format_adaptive(res))
    out = Path(out)
    atomic_write_text(out, json.dumps(result, indent=2))  # never through a link, never half written
    print(f"wrote {out}")
    if old is not None:
        print(format_bench_compare(result, old, compare))
    return result


def _load_old(path: str) -> dict:
    try:
        old = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a bench JSON ({e.__class__.__name__})") from None
    if not isinstance(old, dict) or "runs" not in old:
        raise UserError(f"{path}: not a bench JSON (no 'runs')")
    return old


def format_bench_compare(new: dict, old: dict, name: str) -> str:
    """Ratios new / old per config present in both (> 1 = faster now)."""
    lines = [f"against {name} ({old.get('machine', {}).get('device', '?')}, torch "
             f"{old.get('machine', {}).get('torch', '?')}):"]
    for dname, run in new["runs"].items():
        for label, r in run["configs"].items():
            o = old["runs"].get(dname, {}).get("configs", {}).get(label)
            if not o:
                continue
            lines.append(f"  [{dname}] {label:18s} train x{r['train_examples_per_s'] / o['train_examples_per_s']:.2f}"
                         f"  eval x{r['eval_examples_per_s'] / o['eval_examples_per_s']:.2f}"
                         f"  ceiling ratio {100 * o['ceiling_ratio']:.1f}% -> {100 * r['ceiling_ratio']:.1f}%")
    if len(lines) == 1:
        lines.append("  no config in common")
    return "\n".join(lines)
