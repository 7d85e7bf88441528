"""Image intensities shared by the data pipeline, the losses and the metrics: the BT.601 luma and RGB to grey."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["LUMA_BT601", "rgb_to_grey"]

#: ITU-R BT.601 luma weights of (R, G, B): :math:`Y = 0.299 R + 0.587 G + 0.114 B`, the same as
#: PIL's ``convert("L")``. Used to turn an RGB image into one grey channel.
LUMA_BT601 = (0.299, 0.587, 0.114)


def rgb_to_grey(rgb: torch.Tensor, luma: Sequence[float] | torch.Tensor = LUMA_BT601, dim: int = 1) -> torch.Tensor:
    """
    The luma :math:`Y = w_R R + w_G G + w_B B` of the first three channels of ``rgb`` along ``dim``
    (``1`` for a batch ``(B, C, H, W)``, ``0`` for one image ``(C, H, W)``), the channel kept with size 1.
    Computed in ``rgb``'s dtype and on its device; gradients flow through.
    """
    shape = [1] * rgb.ndim
    shape[dim] = 3
    weights = torch.as_tensor(luma, dtype=rgb.dtype, device=rgb.device).view(shape)
    return (rgb.narrow(dim, 0, 3) * weights).sum(dim, keepdim=True)
