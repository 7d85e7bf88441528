"""The process's place in a ``torch.distributed`` run."""

from __future__ import annotations

import torch

__all__ = ["get_rank"]


def get_rank() -> int:
    """The ``torch.distributed`` rank of this process, ``0`` when no process group is initialised."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
