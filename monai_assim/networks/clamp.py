"""
The [0, 1] clamps of the texture and colour modules, and their straight-through (BPDA) variant.

:class:`~monai_assim.networks.TextureModule` and :class:`~monai_assim.networks.ColorModule` end in
:math:`\\operatorname{clip}_{[0, 1]}`, whose gradient is 0 for every value pushed outside [0, 1]. A
defence that saturates many pixels can look robust only because the attacker's gradient through the
clamp vanishes. The straight-through check (BPDA, Athalye et al. 2018) keeps the forward values and
replaces the clamp's gradient by the identity, :func:`straight_through_clamps`, and
:func:`clamp_out_of_range` measures how many values the modules push outside [0, 1] before the clamps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["clamp_out_of_range", "straight_through_clamps", "unit_clamp"]


class _StraightThroughClamp(torch.autograd.Function):
    """Forward :math:`\\operatorname{clip}_{[0,1]}(x)` (``torch.clamp``, bit-identical); backward the identity."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.clamp(x, 0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def unit_clamp(x: torch.Tensor, straight_through: bool = False) -> torch.Tensor:
    """
    :math:`\\operatorname{clip}_{[0, 1]}(x)`; with ``straight_through`` the same values, but the gradient
    passes as the identity (``d clip / dx := 1`` everywhere).
    """
    if straight_through and torch.is_grad_enabled():
        return _StraightThroughClamp.apply(x)
    return torch.clamp(x, 0.0, 1.0)


def _clamped_modules(network: nn.Module) -> list[nn.Module]:
    return [m for m in network.modules() if hasattr(m, "straight_through_clamp")]


@contextmanager
def straight_through_clamps(network: nn.Module) -> Iterator[int]:
    """
    Within the context, every module of ``network`` with a ``straight_through_clamp`` flag (the texture
    and colour modules) passes its clamp's gradient as the identity; forward values are unchanged. The
    flags are restored on exit. Yields the number of modules switched (0 for a vanilla network).
    """
    modules = _clamped_modules(network)
    flags = [m.straight_through_clamp for m in modules]
    try:
        for m in modules:
            m.straight_through_clamp = True
        yield len(modules)
    finally:
        for m, flag in zip(modules, flags):
            m.straight_through_clamp = flag


@torch.no_grad()
def clamp_out_of_range(network: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """
    The fraction of values that the texture module ``T`` and the colour module ``C`` of an
    :class:`~monai_assim.networks.AssimilationNet` push outside [0, 1] before their clamps:

    .. math::
        f_T = \\frac{1}{|x|}\\#\\{x + r_T(x) \\notin [0, 1]\\}, \\quad
        f_C = \\frac{1}{3|x|}\\#\\{t + r_C(t) \\notin [0, 1]\\}, \\quad t = T(x).

    Args:
        network: an AssimilationNet (DDP / compile wrappers unwrapped by the caller).
        images: ``(B, 1, H, W)`` on [0, 1].

    Returns:
        ``{"texture": f_T, "color": f_C}``; empty for a network without the modules (vanilla).
    """
    texture, color = getattr(network, "texture", None), getattr(network, "color", None)
    if texture is None or color is None:
        return {}
    pre_t = texture.unclamped(images)
    t = unit_clamp(pre_t)
    pre_c = color.unclamped(t)
    outside = lambda v: float(((v < 0) | (v > 1)).float().mean())  # noqa: E731
    return {"texture": outside(pre_t), "color": outside(pre_c)}
