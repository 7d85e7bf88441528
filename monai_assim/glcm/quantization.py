"""Gray-level memberships of intensities on [0, 1]: hard (one-hot) and soft (differentiable)."""

from __future__ import annotations

import torch

from monai_assim.glcm.validation import check_levels, check_width

__all__ = ["quantize", "soft_memberships", "soft_lower_bin"]


def quantize(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Hard quantisation of intensities on [0, 1]: ``q = min(floor(x * levels), levels - 1)`` (int64)."""
    return torch.clamp(torch.floor(x * levels), 0, levels - 1).long()


def soft_lower_bin(x: torch.Tensor, levels: int, width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Sparse form of the soft memberships: every pixel belongs to bin ``a`` with weight ``1 - t`` and to
    bin ``a + 1`` with weight ``t``,

    .. math::

        a + 1 = \\mathrm{clamp}(\\mathrm{round}(x L),\\ 1,\\ L - 1), \\qquad
        t = \\mathrm{clamp}\\left(\\frac{x - (a + 1)/L}{h} + \\frac12,\\ 0,\\ 1\\right),\\quad h = \\mathrm{width}/L:

    ``a + 1`` is the interior bin edge nearest to ``x`` and ``t`` the linear ramp of width ``h`` centred on
    it. Returns ``(a, t)``: ``a`` in ``[0, L - 2]`` (int64, no gradient), ``t`` on [0, 1] (differentiable).
    """
    edge = torch.clamp(torch.round(x.detach() * levels), 1, levels - 1)
    t = torch.clamp((x - edge / levels) * (levels / width) + 0.5, 0.0, 1.0)
    return (edge - 1).long(), t


def soft_memberships(x: torch.Tensor, levels: int, width: float = 1.0) -> torch.Tensor:
    """
    Dense soft memberships ``m_k(x)``, ``k = 0 .. levels - 1``, appended as a last dimension.

    .. math::

        m_k(x) = R\\left(\\frac{x - k/L}{h}\\right) - R\\left(\\frac{x - (k+1)/L}{h}\\right),
        \\quad R(u) = \\mathrm{clamp}(u + 1/2,\\ 0,\\ 1),\\quad h = \\mathrm{width} / L,

    with ``R = 1`` for the lower edge of bin 0 and ``R = 0`` for the upper edge of bin ``L - 1``: the
    indicator of bin ``k`` smoothed by a box of width ``h`` centred on each bin edge. The memberships
    sum to 1, are piecewise linear in ``x`` and equal the hard one-hot of :func:`quantize` except
    within ``h / 2`` of an interior bin edge, so they tend to it as ``width -> 0``. ``width = 1``
    (the maximum) is linear interpolation between the bin centres ``(k + 0.5) / L``.
    """
    check_levels(levels)
    check_width(width)
    lower, t = soft_lower_bin(x, levels, width)
    out = torch.zeros(*x.shape, levels, dtype=x.dtype, device=x.device)
    out = out.scatter(-1, lower.unsqueeze(-1), (1 - t).unsqueeze(-1))
    return out.scatter_add(-1, (lower + 1).unsqueeze(-1), t.unsqueeze(-1))
