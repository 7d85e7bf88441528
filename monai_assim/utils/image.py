"""Constants about image intensities shared by the data pipeline and the losses."""

from __future__ import annotations

__all__ = ["LUMA_BT601"]

#: ITU-R BT.601 luma weights of (R, G, B): :math:`Y = 0.299 R + 0.587 G + 0.114 B`, the same as
#: PIL's ``convert("L")``. Used to turn an RGB image into one grey channel.
LUMA_BT601 = (0.299, 0.587, 0.114)
