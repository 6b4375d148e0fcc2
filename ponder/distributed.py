"""Data parallelism over processes started by `torchrun` (PyTorch's own launcher and `torch.distributed`).

The design keeps a multi-process run *the same computation* as a single process at the same global batch B:
- rank r owns the slots [r*B/W, (r+1)*B/W) of the persistent ACT carry;
- every rank holds the same sampler, the same augmentation RNG and the same exploration generator; each draws for
  the whole global batch and keeps its own slice, so the examples and the random halting floors of every slot are
  those of the single-process run;
- gradients are averaged by `DistributedDataParallel` over per-rank losses scaled by W/B (= the sum over the global
  batch divided by B, as one process computes it); the sparse puzzle-embedding rows and their gradients are
  all-gathered in rank order, so sign-SGD sees the global batch in the single-process order;
- rank 0 alone writes the run directory (config, metrics, TensorBoard, checkpoints); a checkpoint holds the
  *global* carry (gathered), so it is the checkpoint a single process would write, and a run can resume with any
  number of processes that divides B.
Backends: NCCL on CUDA, gloo on CPU. Outside torchrun (no WORLD_SIZE) everything here is a no-op.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def shard(self, n: int) -> slice:
        """This rank's slice of n global rows (n divisible by size)."""
        b = n // self.size
        return slice(self.rank * b, (self.rank + 1) * b)


def init(device: str = "cpu") -> World:
    """Join the process group torchrun describes in the environment (once); World() when not under torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        _bind_defaults_before_the_group()
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return world()


def _bind_defaults_before_the_group() -> None:
    """Import `torch.distributed.nn` now, while no process group exists. Its functions take `group=group.WORLD` as a
    default argument, bound when the module is first imported; torch._dynamo / torch._inductor import it lazily (a
    model build or torch.compile does), and imported after init they pin the default group in 10 function defaults
    for the rest of the interpreter. `destroy_process_group` then cannot free it: gloo's worker threads live on
    into interpreter finalization, where one of them frees a finished collective's tensors, needs the GIL that is
    being torn down, and the process dies with `terminate called without an active exception` (SIGABRT) after
    a finished run (about 1 run in 15 on two busy cores). Imported first, the defaults hold None."""
    import torch.distributed.nn  # noqa: F401


def shutdown(wait: bool = False) -> None:
    """Leave the process group (before exit: gloo may abort a process that exits while still in one). wait: first
    meet every rank at a barrier, so that no rank tears its connections down while a peer is still working (a gloo
    rank aborted there at the end of a run, once in CI)."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def leaving():
    """Leave the process group when the block ends: after every rank has finished it, or at once when it failed
    (a failed rank never arrives at the barrier)."""
    try:
        yield
    except BaseException:
        shutdown()
        raise
    shutdown(wait=True)


def world() -> World:
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def gather_rows(t: Tensor) -> Tensor:
    """Concatenate every rank's tensor along dim 0, in rank order (all shapes equal). Identity in one process."""
    if not world().parallel:
        return t
    if t.dtype == torch.bool:  # not every backend gathers bool
        return gather_rows(t.to(torch.uint8)).bool()
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def _device() -> torch.device:
    """Where collectives' tensors live: the current GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on one of them (stop requests, a diverged loss)."""
    if not world().parallel:
        return flag
    t = torch.tensor([float(flag)], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def sum_floats(values: list[float]) -> list[float]:
    """Element-wise sum over ranks (float64), e.g. metric sums."""
    if not world().parallel:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return t.tolist()


def sum_rows(a):
    """Element-wise sum of a numpy array over ranks, same dtype (ranks fill disjoint rows, zeros elsewhere)."""
    import numpy as np

    if not world().parallel:
        return a
    t = torch.from_numpy(np.ascontiguousarray(a).astype(np.float64 if a.dtype.kind == "f" else np.int64))
    t = t.to(_device())
    dist.all_reduce(t)
    return t.cpu().numpy().astype(a.dtype)


def broadcast(obj):
    """Rank 0's picklable `obj` on every rank."""
    if not world().parallel:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world().parallel:
        dist.barrier()
