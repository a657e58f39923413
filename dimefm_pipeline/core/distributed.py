"""torch.distributed for torchrun: set-up, rank helpers, and feature gathering for a global batch.

Outside torchrun every function is a no-op (a single process is world size 1), so the same code
paths run in tests and on one GPU.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.nn.functional import all_gather as all_gather_with_grad

# Ranks can do very different amounts of work between barriers (one commits a manifest, one encodes
# the last, longest shard); the default 10 min collective timeout would kill healthy runs.
TIMEOUT = timedelta(hours=6)

_object_group = None  # gloo group for Python objects: NCCL can only carry CUDA tensors


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed() -> tuple[int, int, int, torch.device]:
    """Join the torchrun process group from RANK / WORLD_SIZE / LOCAL_RANK (NCCL with CUDA, gloo
    without) and return `(rank, world_size, local_rank, device)`. Without torchrun's variables (or
    with WORLD_SIZE=1) nothing is initialised and the result is `(0, 1, 0, cuda:0 or cpu)`."""
    global _object_group
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or "RANK" not in os.environ:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return 0, 1, 0, device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not _active():
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    # every rank must create the group, in the same order, right here
    _object_group = dist.new_group(backend="gloo", timeout=TIMEOUT) if dist.get_backend() != "gloo" else None
    return rank, dist.get_world_size(), local_rank, device


def rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    """Number of processes (1 outside torchrun)."""
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    """True on the rank that writes manifests, checkpoints and logs."""
    return rank() == 0


def barrier() -> None:
    """Wait for all ranks (no-op outside torchrun)."""
    if _active():
        dist.barrier()


def broadcast_object(obj: Any, *, src: int = 0) -> Any:
    """Return `src`'s picklable `obj` on every rank (over gloo, so it also works under NCCL)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_object_group)
    return box[0]


def destroy() -> None:
    """Leave the process group (no-op outside torchrun)."""
    global _object_group
    if _active():
        dist.destroy_process_group()
    _object_group = None


def gather_features(x: Tensor, *, local_loss: bool = False) -> tuple[Tensor, Tensor]:
    """All-gather a feature batch across ranks and return `(rows, cols)` for similarity matrices.

    `cols` is the global batch (rank order). `rows` is the global batch too, or this rank's `x` when
    `local_loss`. If `x` requires grad, gradients flow back to this rank's slice from every rank's
    loss (they are summed across ranks, so with DDP's gradient averaging the result equals one
    process on the concatenated batch). Local batch sizes may differ between ranks.
    Outside torchrun returns `(x, x)`.
    """
    if not _active() or dist.get_world_size() == 1:
        return x, x
    n = dist.get_world_size()
    # all_gather needs equal shapes: exchange sizes, pad to the largest, cut the padding off again
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.int64)
    sizes = [torch.empty_like(size) for _ in range(n)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    longest = max(sizes)
    padded = x if x.shape[0] == longest else torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    if x.requires_grad:
        parts = all_gather_with_grad(padded)
    else:
        parts = [torch.empty_like(padded) for _ in range(n)]
        dist.all_gather(parts, padded.contiguous())
    cols = torch.cat([p[:s] for p, s in zip(parts, sizes)])
    return (x if local_loss else cols), cols


def average_gradients(params) -> None:
    """Average the `.grad` of `params` over ranks, as DDP does after a backward (sum, then divide by
    the world size), in one all-reduce per dtype. Every rank must hold gradients for the same
    parameters. No-op outside torchrun."""
    if not _active() or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    for dtype in sorted({g.dtype for g in grads}, key=str):
        same = [g for g in grads if g.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in same])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        for g, part in zip(same, flat.split([g.numel() for g in same])):
            g.copy_(part.view_as(g))


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def loader_workers(requested: int) -> int:
    """DataLoader workers: as requested, at most one per usable core (more only contend for the cores,
    and torch warns about them)."""
    return min(requested, usable_cores())


def cpu_threads_beside_workers(workers: int) -> int:
    """On CPU, give torch the cores the DataLoader workers leave free: oversubscribed cores made
    training steps 3-4x slower on a 2-core machine (measured in docs/benchmarks.md)."""
    cores = usable_cores()
    threads = max(1, cores // max(1, world_size_on_node()) - loader_workers(workers))
    torch.set_num_threads(threads)
    return threads


def world_size_on_node() -> int:
    """Processes sharing this machine's cores under torchrun (1 otherwise)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def max_over_ranks(value: int, device=None) -> int:
    """The largest of every rank's `value` (the value itself outside torchrun): e.g. whether any rank
    was asked to stop, so that all stop after the same step."""
    if not _active():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device if device is not None else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
