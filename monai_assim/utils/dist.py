"""The process's place in a ``torch.distributed`` run, and the few collectives the evaluations use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["all_gather_object", "all_reduce", "get_rank", "get_world_size"]


def _initialized() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """The ``torch.distributed`` rank of this process, ``0`` when no process group is initialised."""
    return torch.distributed.get_rank() if _initialized() else 0


def get_world_size() -> int:
    """The number of ``torch.distributed`` processes, ``1`` when no process group is initialised."""
    return torch.distributed.get_world_size() if _initialized() else 1


def all_reduce(values: Sequence[float], op: str = "sum") -> list[float]:
    """``values`` summed (``op="sum"``) or maximised (``"max"``) over the processes, as float64."""
    if get_world_size() == 1:
        return [float(v) for v in values]
    dist = torch.distributed
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return tensor.tolist()


def all_gather_object(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` without a process group)."""
    if get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered
