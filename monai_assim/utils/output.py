"""Reading tensors out of an engine's ``state.output``, batched (one dict) or decollated (a list of dicts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["first_item", "output_tensor"]


def first_item(output: Any) -> Any:
    """The first per-item dict of a decollated output (a list), or ``output`` itself."""
    return output[0] if isinstance(output, Sequence) and not isinstance(output, (str, Mapping)) else output


def output_tensor(output: Any, key: str) -> torch.Tensor:
    """
    ``output[key]`` as one plain batched tensor: ``output`` may be a tensor (returned as it is), a dict
    (MONAI engines with ``decollate=False``) or a list of per-item dicts (``decollate=True``, the items are
    stacked). A ``MetaTensor`` comes back as a plain ``torch.Tensor``.

    Raises:
        TypeError: another type of output.
        KeyError: ``key`` missing.
    """
    if isinstance(output, torch.Tensor):
        value = output
    elif isinstance(output, Mapping):
        value = output[key]
    elif isinstance(output, Sequence) and not isinstance(output, str):
        value = torch.stack([torch.as_tensor(item[key]) for item in output])
    else:
        raise TypeError(f"cannot read {key!r} from an engine output of type {type(output).__name__}.")
    value = torch.as_tensor(value)
    return value.as_subclass(torch.Tensor) if type(value) is not torch.Tensor else value
