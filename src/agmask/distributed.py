"""Data parallel helpers: which process am I, split the prompts, add up the results.

Under `accelerate launch --multi_gpu --num_processes N` (or torchrun) every process runs the same
CLI. `init(device)` joins the process group (gloo on CPU, nccl on CUDA) through accelerate's
`PartialState`, so the trainer's `Accelerator` finds the same state. Without a launcher, or with one
process, every helper is the identity: `shard(items)` is `items`, `all_reduce_sum(t)` is `t`.

The collectives (`all_reduce_sum`, `gather`, `map_sharded`, `broadcast`, `barrier`) must be called
by every process, in the same order: call them only from code that all processes run (the parallel
stages), never from code that runs on the main process alone.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable, Sequence, TypeVar

import torch

from agmask.errors import AgmaskError

T = TypeVar("T")
R = TypeVar("R")

# Non-parallel stages run on the main process while the others wait at a barrier: allow long ones.
TIMEOUT = timedelta(hours=12)


def use_cpu(device: str) -> bool:
    """Whether accelerate must run on CPU (gloo) for this --device: everything but cuda and auto."""
    return not (device.startswith("cuda") or device == "auto")


def launched_world_size() -> int:
    """Processes the launcher started (WORLD_SIZE), before or without `init`."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device: str = "cpu") -> None:
    """Join the process group when the launcher started several processes; otherwise do nothing."""
    if launched_world_size() <= 1 or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if device == "auto":
        raise AgmaskError("--device auto spreads one model over every GPU; with several processes use "
                          "--device cuda (one GPU per process)")
    from accelerate import PartialState

    PartialState(cpu=use_cpu(device), timeout=TIMEOUT)


def accelerator(device: str = "cpu"):
    """An `accelerate.Accelerator` on the process group `init` joined (CPU/gloo unless --device is cuda or auto).

    The trainer uses it for DDP gradient sync, clipping and the reductions of its logged terms."""
    from accelerate import Accelerator

    return Accelerator(cpu=use_cpu(device))


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if _initialized() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if _initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if _initialized() else 0


def is_main() -> bool:
    return rank() == 0


def process_device(device: str) -> str:
    """The device this process uses: with several processes, `cuda` means this process's own GPU."""
    if device == "cuda" and world_size() > 1:
        return f"cuda:{local_rank()}"
    return device


def barrier() -> None:
    if world_size() > 1:
        torch.distributed.barrier()


def shard_bounds(n: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """[lo, hi) of this process's contiguous block of n items; blocks differ in size by at most one."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    base, extra = divmod(n, world)
    lo = rank_ * base + min(rank_, extra)
    return lo, lo + base + (1 if rank_ < extra else 0)


def shard(items: Sequence[T]) -> list[T]:
    """This process's contiguous block of `items` (all of them with one process).

    Contiguous blocks, in rank order, concatenate back to the original order (see `gather`).
    """
    lo, hi = shard_bounds(len(items))
    return list(items[lo:hi])


def _comm_device() -> torch.device:
    """Where tensors must be for the backend: the process's GPU under nccl, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over processes (a new tensor on the input's device; the input itself with one)."""
    if world_size() == 1:
        return tensor
    buf = tensor.detach().to(_comm_device(), copy=True)
    torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)
    return buf.to(tensor.device)


def gather(items: list[T]) -> list[T]:
    """Every process's list, concatenated in rank order (picklable items); `items` with one process."""
    if world_size() == 1:
        return items
    parts: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def map_sharded(fn: Callable[[list[T]], list[R]], items: Sequence[T]) -> list[R]:
    """`fn(items)`, computed as `fn` of each process's block and gathered back in the items' order.

    `fn` must return one result per item. With one process this is exactly `fn(list(items))`.
    """
    if world_size() == 1:
        return fn(list(items))
    local = shard(items)
    out = fn(local) if local else []
    if len(out) != len(local):
        raise ValueError(f"map_sharded: fn returned {len(out)} results for {len(local)} items")
    return gather(out)


def broadcast(obj: T, src: int = 0) -> T:
    """The main process's (`src`'s) value of `obj` on every process."""
    if world_size() == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]
