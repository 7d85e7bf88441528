"""
Argument checks of the GLCM functions, with error messages that name the argument and what was expected
(the feature names are checked by :func:`monai_assim.glcm.features.check_features`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from monai_assim.glcm.offsets import canonical_offsets

__all__ = [
    "check_levels",
    "check_width",
    "check_int",
    "check_image",
    "check_angles",
    "window_grid",
    "validate",
]


def check_levels(levels: int) -> None:
    """``levels`` is an int >= 2."""
    if isinstance(levels, bool) or not isinstance(levels, numbers.Integral):
        raise TypeError(f"levels must be an int, got {type(levels).__name__}.")
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}.")


def check_width(width: float) -> None:
    """``width`` (the soft kernel's, in gray levels) is a real number in (0, 1]."""
    if isinstance(width, bool) or not isinstance(width, numbers.Real):
        raise TypeError(f"width must be a real number, got {type(width).__name__}.")
    if not 0.0 < width <= 1.0:
        raise ValueError(f"width must be in (0, 1] (in units of one gray level), got {width}.")


def check_int(name: str, value: int, minimum: int) -> None:
    """``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")


def check_image(x: torch.Tensor) -> None:
    """``x`` is a non-empty floating point ``(B, C, H, W)`` tensor with values on [0, 1] (no NaN)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"the image must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"the image must be floating point with values on [0, 1], got dtype {x.dtype}.")
    if x.ndim != 4:
        raise ValueError(f"the image must have shape (B, C, H, W) (rank 4), got shape {tuple(x.shape)}.")
    if x.numel() == 0:
        raise ValueError(f"the image is empty, shape {tuple(x.shape)}.")
    with torch.no_grad():
        lo, hi = torch.aminmax(x.detach())
        lo, hi = float(lo), float(hi)
    if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
        raise ValueError(f"image values must lie on [0, 1], got min {lo} and max {hi}.")


def check_angles(angles: float | Sequence[float]) -> tuple[float, ...]:
    """The angles (degrees) as a non-empty tuple of finite numbers (one angle may be given as a number)."""
    if isinstance(angles, numbers.Real):
        angles = (angles,)
    if isinstance(angles, (str, bytes)) or not isinstance(angles, Sequence):
        raise TypeError(f"angles must be a sequence of numbers in degrees, got {type(angles).__name__}.")
    angles = tuple(angles)
    if not angles:
        raise ValueError("angles must contain at least one angle.")
    for a in angles:
        if isinstance(a, bool) or not isinstance(a, numbers.Real):
            raise TypeError(f"angles must be numbers in degrees, got {a!r}.")
        if not math.isfinite(a):
            raise ValueError(f"angles must be finite numbers in degrees, got {a!r}.")
    return angles


def window_grid(h: int, w: int, window: int, stride: int | None) -> tuple[int, int, int]:
    """
    ``(stride, nH, nW)``: ``nH = (H - window) // stride + 1`` (likewise ``nW``), ``stride`` defaulting to
    ``window``; partial windows at the bottom and right borders are dropped.
    """
    check_int("window", window, 2)
    stride = window if stride is None else stride
    check_int("stride", stride, 1)
    if window > h or window > w:
        raise ValueError(f"window {window} is larger than the image ({h} x {w}).")
    return stride, (h - window) // stride + 1, (w - window) // stride + 1


def validate(x, levels, distance, angles, window, stride, soft, width):
    """
    Check every argument of the GLCM functions; returns ``(stride, nH, nW, offsets, plan)`` with the
    window grid of :func:`window_grid` and the offsets of
    :func:`~monai_assim.glcm.offsets.canonical_offsets`.
    """
    check_image(x)
    check_levels(levels)
    check_int("distance", distance, 1)
    angles = check_angles(angles)
    stride, nh, nw = window_grid(x.shape[-2], x.shape[-1], window, stride)
    offsets, plan = canonical_offsets(distance, angles, window)
    if soft:
        check_width(width)
    return stride, nh, nw, offsets, plan
