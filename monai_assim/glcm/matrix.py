"""
The per-window matrix path (the reference): the normalised, asymmetric co-occurrence matrix of every window,

.. math::

    P_{ij} = \\frac{1}{N_o} \\sum_{p,\\, p + o \\in W} m_i(x_p)\\, m_j(x_{p+o}),
    \\qquad N_o = \\#\\{p : p \\in W,\\ p + o \\in W\\},

for any stride (overlapping windows included). Every pair is copied once per window that contains it
(an unfold), and the matrices are formed chunk by chunk. :func:`glcm` always takes this path;
:func:`~monai_assim.glcm.glcm_features` takes it when ``stride < window``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from monai_assim.glcm.offsets import DEFAULT_ANGLES, n_pairs
from monai_assim.glcm.quantization import quantize, soft_lower_bin
from monai_assim.glcm.validation import validate

__all__ = ["glcm", "per_offset"]

# number of co-occurrence cells (windows x L x L) formed at once: about 1 MiB in float32, so that the
# matrices of a chunk stay in cache between their accumulation and the features computed from them
_CHUNK_CELLS = 1 << 18


def _pair_maps(v: torch.Tensor, offset: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """
    For a per-pixel map ``v`` (``(N, H, W)``) and a canonical offset ``(dr, dc)`` (``dr >= 0``), the maps
    of the first and of the second pixel of every pair ``(p, p + offset)`` that lies in the image: two
    ``(N, H - dr, W - |dc|)`` views. Entry ``(r, c)`` of the first map is pixel ``(r, c + max(0, -dc))``.
    """
    dr, dc = offset
    h, w = v.shape[-2], v.shape[-1]
    c0, c1 = max(0, -dc), w - max(0, dc)
    return v[..., : h - dr, c0:c1], v[..., dr:, c0 + dc : c1 + dc]


def _windows(v: torch.Tensor, offset: tuple[int, int], window: int, stride: int) -> torch.Tensor:
    """
    Unfold the last two dims of a pair map into windows: ``(..., nH, nW, kh, kw)``, ``kh = window - dr``,
    ``kw = window - |dc|``. The pairs of the window at ``(i * stride, j * stride)`` are exactly the first
    pixels in rows ``[i * stride, i * stride + kh)`` and columns ``[j * stride, j * stride + kw)`` of the
    pair map, so a pair counts only when both its pixels lie in the window.
    """
    dr, dc = offset
    return v.unfold(-2, window - dr, stride).unfold(-2, window - abs(dc), stride)


def _pair_terms(
    x: torch.Tensor, levels: int, offset: tuple[int, int], window: int, stride: int, soft: bool, width: float
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int, int], int]:
    """
    The contributions of the in-window pixel pairs of one canonical offset.

    Hard mode: pair ``k`` of window ``w`` adds 1 to cell ``cells[w, k] = q_p L + q_q`` of the ``L x L``
    count matrix. Soft mode: every pixel has two memberships (bins ``a`` and ``a + 1`` with weights
    ``1 - t`` and ``t``), so a pair adds the four products ``weights[w, k]`` to the cells
    ``(a_p + u, a_q + v)``, ``(u, v) = (0, 0), (1, 0), (0, 1), (1, 1)``, and ``cells[w, k] = a_p (L - 1) + a_q``
    indexes the ``(L - 1) x (L - 1)`` grid of the corners ``(a_p, a_q)``.

    Returns:
        ``(cells, weights, (N, nH, nW), n_pairs)``: ``cells`` (int64, ``(N * nH * nW, K)``) and, in soft
        mode, ``weights`` (``(N * nH * nW, K, 4)``), with ``K = kh * kw = n_pairs`` pairs per window.
    """
    k = n_pairs(offset, window)
    if soft:
        lower, t = soft_lower_bin(x, levels, width)
        a_p, a_q = _pair_maps(lower, offset)
        t_p, t_q = _pair_maps(t, offset)
        u_p, u_q = 1 - t_p, 1 - t_q
        cells = a_p * (levels - 1) + a_q
        weights = torch.stack((u_p * u_q, t_p * u_q, u_p * t_q, t_p * t_q), 1)  # (N, 4, H', W')
        weights = _windows(weights, offset, window, stride)  # (N, 4, nH, nW, kh, kw)
        weights = weights.permute(0, 2, 3, 4, 5, 1).reshape(-1, k, 4)
    else:
        q_p, q_q = _pair_maps(quantize(x.detach(), levels), offset)
        cells = q_p * levels + q_q
        weights = None
    cells = _windows(cells, offset, window, stride)  # (N, nH, nW, kh, kw)
    grid = tuple(cells.shape[:3])
    return cells.reshape(-1, k), weights, grid, k


def _accumulate(
    cells: torch.Tensor, weights: torch.Tensor | None, levels: int, n_pairs: int, dtype: torch.dtype
) -> torch.Tensor:
    """Normalised matrices ``(n, L, L)`` of ``n`` windows from their pair terms (see :func:`_pair_terms`)."""
    n = cells.shape[0]
    if weights is None:
        cells = cells + torch.arange(n, device=cells.device).unsqueeze(-1) * (levels * levels)
        # counts are whole numbers below 2**24: exact in float32 and float64, so P is correctly rounded
        ones = torch.ones(1, dtype=dtype, device=cells.device).expand(cells.numel())
        counts = torch.zeros(n * levels * levels, dtype=dtype, device=cells.device)
        return counts.index_add_(0, cells.reshape(-1), ones).view(n, levels, levels) / n_pairs
    g = levels - 1
    cells = cells + torch.arange(n, device=cells.device).unsqueeze(-1) * (g * g)
    corners = torch.zeros(n * g * g, 4, dtype=weights.dtype, device=weights.device)
    corners = corners.index_add(0, cells.reshape(-1), weights.reshape(-1, 4)).view(n, g, g, 4)
    mats = (
        F.pad(corners[..., 0], (0, 1, 0, 1))  # (a_p, a_q)
        + F.pad(corners[..., 1], (0, 1, 1, 0))  # (a_p + 1, a_q)
        + F.pad(corners[..., 2], (1, 0, 0, 1))  # (a_p, a_q + 1)
        + F.pad(corners[..., 3], (1, 0, 1, 0))  # (a_p + 1, a_q + 1)
    )
    return mats / n_pairs


def per_offset(
    x: torch.Tensor,
    levels: int,
    distance: int,
    angles: Sequence[float],
    window: int,
    stride: int | None,
    soft: bool,
    width: float,
    reduce: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, list]:
    """
    Validate, then for every distinct canonical offset build the windows' matrices chunk by chunk and
    map each chunk through ``reduce`` (``(n, L, L) -> (n, ...)``). Returns the stacked results
    ``(N, O, nH, nW, ...)`` and the angle plan of :func:`~monai_assim.glcm.offsets.canonical_offsets`.
    """
    stride, _, _, offsets, plan = validate(x, levels, distance, angles, window, stride, soft, width)
    flat = x.reshape(-1, x.shape[-2], x.shape[-1])
    chunk = max(1, _CHUNK_CELLS // (levels * levels))
    results = []
    for offset in offsets:  # at most four distinct offsets per distance
        cells, weights, grid, k = _pair_terms(flat, levels, offset, window, stride, soft, width)
        parts = []
        for s in range(0, cells.shape[0], chunk):  # chunks of windows, not single windows
            w = None if weights is None else weights[s : s + chunk]
            parts.append(reduce(_accumulate(cells[s : s + chunk], w, levels, k, x.dtype)))
        out = torch.cat(parts, 0)
        results.append(out.reshape(*grid, *out.shape[1:]))
    return torch.stack(results, 1), plan


def glcm(
    x: torch.Tensor,
    levels: int = 32,
    distance: int = 3,
    angles: Sequence[float] = DEFAULT_ANGLES,
    window: int = 20,
    stride: int | None = None,
    soft: bool = False,
    width: float = 1.0,
) -> torch.Tensor:
    """
    Normalised (sum 1), asymmetric co-occurrence matrices of every window,

    .. math::

        P_{ij} = \\frac{1}{N_o} \\sum_{p,\\, p + o \\in W} m_i(x_p)\\, m_j(x_{p+o}),

    ``m`` the one-hot (``soft=False``, :func:`~monai_assim.glcm.quantize`) or soft
    (:func:`~monai_assim.glcm.soft_memberships`) memberships and ``N_o`` the number of in-window pairs.

    Args:
        x: intensities on [0, 1], shape ``(B, C, H, W)``, float32 or float64, any device.
        levels: number of gray levels ``L`` (>= 2).
        distance: pixel distance ``d`` of the pairs (>= 1).
        angles: angles in degrees; offset ``(round(sin t * d), round(cos t * d))`` (see
            :func:`~monai_assim.glcm.glcm_offset`).
        window: side of the square windows (<= H and W).
        stride: step between windows; ``None`` means ``window`` (non-overlapping tiles). Windows are
            placed at ``0, stride, 2 * stride, ...`` while they fit: a partial tile at the bottom or
            right border is dropped, as ``torch.nn.functional.unfold`` does.
        soft: hard one-hot memberships (``False``, not differentiable) or soft ones (``True``).
        width: width of the soft kernel in gray levels, in (0, 1]; ignored when ``soft`` is False.

    Returns:
        ``P`` of shape ``(B, C, A, nH, nW, L, L)``, with ``P[..., i, j]`` the fraction of in-window pairs
        ``(p, p + offset)`` with ``x_p`` at level ``i`` and ``x_{p + offset}`` at level ``j``, and
        ``nH = (H - window) // stride + 1`` (likewise ``nW``).
    """
    mats, plan = per_offset(x, levels, distance, angles, window, stride, soft, width, lambda p: p)
    out = [mats[:, k].transpose(-1, -2) if transposed else mats[:, k] for k, transposed in plan]
    out = torch.stack(out, 1)
    return out.reshape(*x.shape[:2], *out.shape[1:])
