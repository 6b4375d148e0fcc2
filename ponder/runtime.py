"""Where and how the maths runs, for every command (both trainers, both evaluators, `ponder bench`): the device,
autocast, CPU threads, CPU memory reuse, torch.compile and the DDP wrapper.

Nothing here knows a model, a task or a run directory; `ponder.run` holds what a run writes and how its loop goes.
"""

from __future__ import annotations

import contextlib
import inspect
import os

import torch

from ponder import UserError, distributed

_HEAP_BYTES = 1 << 30  # freed blocks up to this size stay in the heap for reuse


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed large blocks for reuse instead of handing them back to the OS (CPU runs).

    By default glibc serves every block above its mmap threshold (at most 32 MB) with a fresh mmap and unmaps it on
    free, so each large activation of a step - a (B*D, 2I) SwiGLU expansion of TRM-MLP at hidden 512 is 64 MB -
    costs page faults and kernel zeroing at every use: on this project's 2-core CPU an element-wise add of two
    32 MB tensors took 17 ms instead of 3.5 ms, and the TRM-MLP Sudoku step ran 25% slower (README, Scaling).
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


def autocast(dtype: str, device: torch.device):
    """The forward's precision context: bf16 autocast (float32 master weights) or nothing (train.dtype)."""
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
