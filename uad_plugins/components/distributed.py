"""Tensor helpers for models whose training state is not a gradient (prototypes, statistics) under data-parallel
training: each process sees a share of every batch, so such state must be combined across processes or the
processes drift apart. Everything here is a no-op in a single process."""

from __future__ import annotations

import torch

__all__ = ["all_reduce_range", "all_reduce_sum", "broadcast_from_zero", "world_size"]


def world_size() -> int:
    """Processes in the default process group (1 when none is initialised)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_world_size())
    return 1


@torch.no_grad()
def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Replace each tensor, in place, by its sum over all processes (nothing to do in a single process)."""
    if world_size() == 1:
        return
    for tensor in tensors:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)


@torch.no_grad()
def broadcast_from_zero(*tensors: torch.Tensor) -> None:
    """Overwrite each tensor, in place, with rank 0's (nothing to do in a single process)."""
    if world_size() == 1:
        return
    for tensor in tensors:
        torch.distributed.broadcast(tensor, src=0)


@torch.no_grad()
def all_reduce_range(low: float, high: float) -> tuple[float, float]:
    """The smallest ``low`` and the largest ``high`` over all processes (the values themselves in one process)."""
    if world_size() == 1:
        return low, high
    values = torch.tensor([-low, high], dtype=torch.float64)
    torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MAX)
    return float(-values[0]), float(values[1])
