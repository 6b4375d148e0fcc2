"""Where and how the maths runs, for every command (both trainers, both evaluators, `ponder bench`): the device,
the precision (train.dtype=auto and autocast), CPU threads, CPU memory reuse, torch.compile and the DDP wrapper.

Nothing here knows a model, a task or a run directory; `ponder.run` holds what a run writes and how its loop goes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import platform
import re
import time

import torch

from ponder import UserError, distributed

_HEAP_BYTES = 1 << 30  # freed blocks up to this size stay in the heap for reuse


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed large blocks for reuse instead of handing them back to the OS (CPU runs).

    By default glibc serves every block above its mmap threshold (at most 32 MB) with a fresh mmap and unmaps it on
    free, so each large activation of a step - a (B*D, 2I) SwiGLU expansion of TRM-MLP at hidden 512 is 64 MB -
    costs page faults and kernel zeroing at every use: on this project's 2-core CPU an element-wise add of two
    32 MB tensors took 17 ms instead of 3.5 ms, and the TRM-MLP Sudoku step ran 25% slower (docs/scaling.md).
    This is what the CUDA caching allocator does on GPUs and what jemalloc/tcmalloc preloads do on CPUs; it is left
    alone when the user set glibc's MALLOC_* tunables or preloads another allocator. Returns whether it applied.
    """
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES",
                                     "LD_PRELOAD")):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        return bool(libc.mallopt(m_mmap_threshold, _HEAP_BYTES) and libc.mallopt(m_trim_threshold, _HEAP_BYTES))
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return False


def resolve_device(name: str, setting: str = "train.device") -> torch.device:
    """The run's device, prepared: CUDA index per torchrun rank; on CPU, large freed blocks kept for reuse.
    `setting` names where it came from in errors (train.device, or a command's --device)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{setting}={name} is not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        other = "train.device=cpu" if setting == "train.device" else f"{setting} cpu"
        raise UserError(f"{setting}={name} but CUDA is not available here (use {other})")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"{setting}={name} but this machine has {torch.cuda.device_count()} GPU(s) (cuda:0 ..)")
    world = distributed.world()
    if device.type == "cuda" and world.parallel and device.index is None:  # torchrun: one GPU per local rank
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if device.type == "cpu":
        keep_freed_memory()
    return device


def set_threads(threads: int, device: torch.device) -> None:
    """torch's CPU threads: `threads` when set (train.threads); under torchrun on CPU the cores are shared out
    between the processes instead of oversubscribed; otherwise PyTorch's default."""
    world = distributed.world()
    if threads:
        torch.set_num_threads(threads)
    elif world.parallel and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.size))


DTYPES = ("float32", "bfloat16")
BF16_GAIN = 1.5  # auto picks bf16 where a bf16 matmul runs at least this many times the float32 rate (AMX: 1.0,
#                 its tiles are known fast; the probe then only guards against a CPU that reports them but crawls)
AUTO_ENV = "PONDER_AUTO_DTYPE"  # fixes what train.dtype=auto picks (the test suite pins float32)


def cpu_bf16_units() -> str | None:
    """The CPU's bf16 matrix hardware named by its Linux flags: "AMX", "AVX512-BF16" (x86), "BF16" (Arm); "" when
    the flags are readable and name none; None when they cannot be read (not Linux)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"), ("bf16", "BF16")):
        if flag in flags:
            return name
    return ""


def matmul_rate(dtype: torch.dtype, device: torch.device, n: int = 1024, reps: int = 5) -> float:
    """Best GFLOP/s of an n^3 matmul in `dtype` (after one untimed call), a start-up probe of ~0.15 s on a CPU."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


@functools.cache
def _auto_dtype(device: torch.device) -> tuple[str, str]:
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            major, minor = torch.cuda.get_device_capability(device)
            return "bfloat16", f"CUDA sm_{major}{minor} multiplies bf16 in hardware"
        return "float32", "this GPU has no bf16 support"
    if device.type != "cpu":
        return "float32", f"no bf16 rule for {device.type}"
    units = cpu_bf16_units()
    if units == "" and platform.machine().lower() in ("x86_64", "amd64", "i686"):
        return "float32", "the CPU flags name no bf16 matrix units (AMX, AVX512-BF16)"
    gain = matmul_rate(torch.bfloat16, device) / matmul_rate(torch.float32, device)
    hardware = units or platform.processor() or platform.machine()
    if gain >= (1.0 if units == "AMX" else BF16_GAIN):  # AMX: 4-6x when alone, ~2x on a busy machine
        return "bfloat16", f"{hardware}: bf16 matmuls {gain:.1f}x float32 here"
    return "float32", f"{hardware}: bf16 matmuls only {gain:.1f}x float32 here"


def resolve_dtype(setting: str, device: torch.device) -> tuple[str, str]:
    """train.dtype -> (float32 or bfloat16, why). "auto" picks bf16 autocast (float32 master weights) where bf16
    matmuls are clearly faster on this device: CUDA GPUs with bf16 support; CPUs whose bf16 matmul, probed once per
    process (~0.1 s), runs at least BF16_GAIN x float32 - on x86 only those whose flags name AMX or AVX512-BF16 are
    probed. Under torchrun the ranks agree (bf16 only if every rank picks it)."""
    if setting != "auto":
        return setting, "train.dtype"
    env = os.environ.get(AUTO_ENV, "")
    if env:
        if env not in DTYPES:
            raise UserError(f"{AUTO_ENV}={env!r}: must be float32 or bfloat16 (or unset, to measure)")
        name, why = env, f"{AUTO_ENV}"
    else:
        name, why = _auto_dtype(device)
    if distributed.any_rank(name != "bfloat16") and name == "bfloat16":
        name, why = "float32", "another rank found bf16 slow"
    return name, f"auto: {why}"


def with_dtype(cfg, name: str):
    """`cfg` with train.dtype = name (configs are frozen dataclasses)."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, dtype=name))


def settle_dtype(cfg, device: torch.device, echo: bool = True):
    """`cfg` with train.dtype resolved (`resolve_dtype`), announced on stdout by the main process (stderr stays for
    errors). Trainers call it before writing config.yaml, so the run records the precision it trained in and a
    resume keeps it bit for bit."""
    name, why = resolve_dtype(cfg.train.dtype, device)
    if echo and distributed.world().main:
        print(f"dtype: {name} ({why})", flush=True)
    return with_dtype(cfg, name)


def settle_eval_dtype(cfg, overrides, device: torch.device):
    """The precision of `ponder eval`, `solve` and `lm eval`: train.dtype=auto for this machine (a run trained in
    bf16 on a GPU is evaluated in float32 on a CPU without bf16 units), unless the command line sets train.dtype."""
    if not any(o.split("=", 1)[0].strip() == "train.dtype" for o in overrides):
        cfg = with_dtype(cfg, "auto")
    return settle_dtype(cfg, device, echo=False)  # the results record it (results.json "dtype")


def autocast(dtype: str, device: torch.device):
    """The forward's precision context: bf16 autocast (float32 master weights) or nothing (train.dtype)."""
    if dtype == "auto":  # a config used without settle_dtype (library calls): the same choice, silently
        dtype = resolve_dtype(dtype, device)[0]
    if dtype == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_compile_backend(backend: str) -> None:
    if backend == "off":
        return
    import torch._dynamo

    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise UserError(f"train.compile={backend!r}: not a torch.compile backend here "
                        f"(try inductor or aot_eager, or off)")


def compile_refusal(backend: str, dtype: str, device: torch.device) -> str | None:
    """Why `backend` must not compile a training step in `dtype` on `device`, or None. torch 2.13's inductor
    corrupts the CPU heap when it compiles a step's backward under bf16 autocast (the demo's model and TRM at
    hidden 128 abort with glibc's 'free(): corrupted unsorted chunks' / 'corrupted size vs. prev_size' within a
    few steps; forward-only and float32 ran clean): the heap-corruption regression of pytorch/pytorch#181618."""
    version = tuple(int(v) for v in re.findall(r"\d+", torch.__version__)[:2])
    if backend == "inductor" and device.type == "cpu" and dtype == "bfloat16" and version == (2, 13):
        return (f"train.compile=inductor with bf16 autocast on CPU: torch {torch.__version__}'s inductor corrupts "
                f"the heap in the backward (pytorch/pytorch#181618); use train.dtype=float32 with it, or "
                f"train.compile=off")
    return None


def compile_model(model: torch.nn.Module, backend: str) -> torch.nn.Module:
    check_compile_backend(backend)
    return torch.compile(model, backend=backend)


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP without per-forward buffer broadcasts: the buffers stay in sync by construction (the puzzle table gets
    the same sign-SGD update on every rank, and broadcasting it each step would cost its whole size).
    `broadcast_buffers` is deprecated from torch 2.1x on, in favour of `forward_sync_buffers`."""
    ddp = torch.nn.parallel.DistributedDataParallel
    params = inspect.signature(ddp).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return ddp(model, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)
