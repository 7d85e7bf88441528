"""Windowed, batched and differentiable gray-level co-occurrence matrices (GLCM) in pure torch.

For an image quantised to ``L`` gray levels and an offset ``o = (dr, dc)``, the normalised, asymmetric
co-occurrence matrix of a window ``W`` is

.. math::

    P_{ij} = \\frac{1}{N_o} \\sum_{p,\\, p + o \\in W} m_i(x_p)\\, m_j(x_{p+o}),
    \\qquad N_o = \\#\\{p : p \\in W,\\ p + o \\in W\\},

where ``m(x)`` is the membership vector of a pixel: one-hot (``hard``) or a differentiable soft
assignment (``soft``). Texture features are functions of ``P`` (see :func:`glcm_features_from_matrix`).
The conventions (offsets, windows, border tiles, soft kernel) are explained in ``docs/glcm.md``.

This module imports only torch: the MONAI wrappers live in :mod:`monai_assim.losses` and
:mod:`monai_assim.transforms`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "SUPPORTED_FEATURES",
    "PAPER_FEATURES",
    "DEFAULT_ANGLES",
    "glcm_offset",
    "quantize",
    "soft_memberships",
    "glcm",
    "glcm_features",
    "glcm_features_from_matrix",
    "sot_matrix",
]

#: Every feature :func:`glcm_features` can compute. ``homogeneity`` is the paper's
#: :math:`\sum P_{ij} / (1 + |i - j|)`; ``homogeneity_skimage`` is scikit-image's
#: :math:`\sum P_{ij} / (1 + (i - j)^2)`.
SUPPORTED_FEATURES = (
    "asm",
    "contrast",
    "homogeneity",
    "homogeneity_skimage",
    "correlation",
    "dissimilarity",
    "energy",
    "entropy",
)
#: The five features of the paper's SOT matrix.
PAPER_FEATURES = ("asm", "contrast", "homogeneity", "correlation", "dissimilarity")
#: The paper's eight angles, in degrees.
DEFAULT_ANGLES = (0, 45, 90, 135, 180, 225, 270, 315)

# features that are linear in P: their weight w(i, j) (i, j gray levels, levels L)
_LINEAR_WEIGHTS = {
    "contrast": lambda d: d**2,
    "dissimilarity": lambda d: d.abs(),
    "homogeneity": lambda d: 1.0 / (1.0 + d.abs()),
    "homogeneity_skimage": lambda d: 1.0 / (1.0 + d**2),
}
# scikit-image's threshold below which a marginal standard deviation counts as zero
_CORRELATION_STD_EPS = 1e-15


def _round_half_away(value: float) -> int:
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def glcm_offset(distance: int, angle: float) -> tuple[int, int]:
    """
    The pixel offset ``(row, col)`` of an angle in degrees, with scikit-image's convention::

        row = round(sin(theta) * distance),  col = round(cos(theta) * distance)

    rounding half away from zero. Rows grow downwards, so 90 degrees pairs a pixel with the pixel
    ``distance`` rows below it, and ``theta + 180`` gives the negated offset.
    """
    theta = math.radians(float(angle))
    return _round_half_away(math.sin(theta) * distance), _round_half_away(math.cos(theta) * distance)


def quantize(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Hard quantisation of intensities on [0, 1]: ``q = min(floor(x * levels), levels - 1)`` (int64)."""
    return torch.clamp(torch.floor(x * levels), 0, levels - 1).long()


def _soft_lower_bin(x: torch.Tensor, levels: int, width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Sparse form of the soft memberships: every pixel belongs to bin ``a`` with weight ``1 - t`` and to
    bin ``a + 1`` with weight ``t`` (``a`` in ``[0, levels - 2]``, int64, no gradient; ``t`` on [0, 1],
    differentiable). ``a + 1`` is the interior bin edge ``k / levels`` nearest to ``x`` and ``t`` the
    linear ramp of width ``width / levels`` centred on that edge.
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
    _check_levels(levels)
    _check_width(width)
    lower, t = _soft_lower_bin(x, levels, width)
    out = torch.zeros(*x.shape, levels, dtype=x.dtype, device=x.device)
    out = out.scatter(-1, lower.unsqueeze(-1), (1 - t).unsqueeze(-1))
    return out.scatter_add(-1, (lower + 1).unsqueeze(-1), t.unsqueeze(-1))


def _check_levels(levels: int) -> None:
    if isinstance(levels, bool) or not isinstance(levels, numbers.Integral):
        raise TypeError(f"levels must be an int, got {type(levels).__name__}.")
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}.")


def _check_width(width: float) -> None:
    if isinstance(width, bool) or not isinstance(width, numbers.Real):
        raise TypeError(f"width must be a real number, got {type(width).__name__}.")
    if not 0.0 < width <= 1.0:
        raise ValueError(f"width must be in (0, 1] (in units of one gray level), got {width}.")


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")


def _check_image(x: torch.Tensor) -> None:
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


def _check_features(features: Sequence[str]) -> tuple[str, ...]:
    if isinstance(features, str):
        features = (features,)
    features = tuple(features)
    if not features:
        raise ValueError("features must name at least one feature.")
    for name in features:
        if not isinstance(name, str):
            raise TypeError(f"feature names must be str, got {type(name).__name__}.")
        if name not in SUPPORTED_FEATURES:
            raise ValueError(f"unknown GLCM feature {name!r}; supported: {', '.join(SUPPORTED_FEATURES)}.")
    return features


def _check_angles(angles: Sequence[float]) -> tuple[float, ...]:
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


def _plan_offsets(distance: int, angles: Sequence[float], window: int) -> tuple[list, list]:
    """
    The distinct canonical offsets to compute (``dr > 0``, or ``dr == 0`` and ``dc > 0``) and, for each
    requested angle, ``(index into the canonical list, transposed)``: ``theta + 180`` negates the
    offset, and the matrix of ``-o`` is the transpose of the matrix of ``o``.
    """
    canonical: list[tuple[int, int]] = []
    plan = []
    for angle in angles:
        dr, dc = glcm_offset(distance, angle)
        if dr == 0 and dc == 0:
            raise ValueError(f"angle {angle} with distance {distance} gives a zero offset.")
        if abs(dr) >= window or abs(dc) >= window:
            raise ValueError(
                f"angle {angle} with distance {distance} gives offset {(dr, dc)}: no pixel pair fits in a "
                f"window of {window}; use a larger window or a smaller distance."
            )
        transposed = dr < 0 or (dr == 0 and dc < 0)
        if transposed:
            dr, dc = -dr, -dc
        if (dr, dc) not in canonical:
            canonical.append((dr, dc))
        plan.append((canonical.index((dr, dc)), transposed))
    return canonical, plan


def _window_grid(h: int, w: int, window: int, stride: int | None) -> tuple[int, int, int]:
    _check_int("window", window, 2)
    stride = window if stride is None else stride
    _check_int("stride", stride, 1)
    if window > h or window > w:
        raise ValueError(f"window {window} is larger than the image ({h} x {w}).")
    return stride, (h - window) // stride + 1, (w - window) // stride + 1


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


# number of co-occurrence cells (windows x L x L) formed at once: about 1 MiB in float32, so that the
# matrices of a chunk stay in cache between their accumulation and the features computed from them
_CHUNK_CELLS = 1 << 18


def _pair_terms(
    x: torch.Tensor, levels: int, offset: tuple[int, int], window: int, stride: int, soft: bool, width: float
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int, int], int]:
    """
    The contributions of the in-window pixel pairs of one canonical offset.

    Returns ``(cells, weights, (N, nH, nW), n_pairs)``: ``cells`` (int64, ``(N * nH * nW, K)``) and, in
    soft mode, ``weights`` (``(N * nH * nW, K, 4)``), with ``K = kh * kw = n_pairs`` pairs per window.

    Hard mode: pair ``k`` of window ``w`` adds 1 to cell ``cells[w, k] = q_p * L + q_q`` of the
    ``L x L`` count matrix. Soft mode: every pixel has two memberships (bins ``a`` and ``a + 1`` with
    weights ``1 - t`` and ``t``), so a pair adds the four products ``weights[w, k]`` to the cells
    ``(a_p + u, a_q + v)``, ``(u, v) = (0, 0), (1, 0), (0, 1), (1, 1)``, and ``cells[w, k] = a_p (L - 1) + a_q``
    indexes the ``(L - 1) x (L - 1)`` grid of the corners ``(a_p, a_q)``.
    """
    dr, dc = offset
    n_pairs = (window - dr) * (window - abs(dc))
    if soft:
        lower, t = _soft_lower_bin(x, levels, width)
        a_p, a_q = _pair_maps(lower, offset)
        t_p, t_q = _pair_maps(t, offset)
        u_p, u_q = 1 - t_p, 1 - t_q
        cells = a_p * (levels - 1) + a_q
        weights = torch.stack((u_p * u_q, t_p * u_q, u_p * t_q, t_p * t_q), 1)  # (N, 4, H', W')
        weights = _windows(weights, offset, window, stride)  # (N, 4, nH, nW, kh, kw)
        weights = weights.permute(0, 2, 3, 4, 5, 1).reshape(-1, n_pairs, 4)
    else:
        q_p, q_q = _pair_maps(quantize(x.detach(), levels), offset)
        cells = q_p * levels + q_q
        weights = None
    cells = _windows(cells, offset, window, stride)  # (N, nH, nW, kh, kw)
    grid = tuple(cells.shape[:3])
    return cells.reshape(-1, n_pairs), weights, grid, n_pairs


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


def _per_offset(x, levels, distance, angles, window, stride, soft, width, reduce):
    """
    Validate, then for every distinct canonical offset build the windows' matrices chunk by chunk and
    map each chunk through ``reduce`` (``(n, L, L) -> (n, ...)``). Returns the stacked results
    ``(N, O, nH, nW, ...)`` and the angle plan of :func:`_plan_offsets`.
    """
    _check_image(x)
    _check_levels(levels)
    _check_int("distance", distance, 1)
    angles = _check_angles(angles)
    stride, _, _ = _window_grid(x.shape[-2], x.shape[-1], window, stride)
    offsets, plan = _plan_offsets(distance, angles, window)
    if soft:
        _check_width(width)
    flat = x.reshape(-1, x.shape[-2], x.shape[-1])
    chunk = max(1, _CHUNK_CELLS // (levels * levels))
    results = []
    for offset in offsets:  # at most four distinct offsets per distance
        cells, weights, grid, n_pairs = _pair_terms(flat, levels, offset, window, stride, soft, width)
        parts = []
        for s in range(0, cells.shape[0], chunk):  # chunks of windows, not single windows
            w = None if weights is None else weights[s : s + chunk]
            parts.append(reduce(_accumulate(cells[s : s + chunk], w, levels, n_pairs, x.dtype)))
        out = torch.cat(parts, 0)
        results.append(out.reshape(*grid, *out.shape[1:]))
    return torch.stack(results, 1), plan


# ---------------------------------------------------------------------------------------------------
# Fast path for non-overlapping tiles (stride == window): features without the per-window matrices
# ---------------------------------------------------------------------------------------------------

# features that need the joint matrix; the others come from per-window sums over pairs
_JOINT_FEATURES = ("asm", "energy", "entropy")
# at most this many joint-matrix cells (tiles x L x L) exist at once in the tile path: 1 MiB in float32, so that they stay in cache
_TILE_CHUNK_CELLS = 1 << 18


def _tiled(v: torch.Tensor, window: int, nh: int, nw: int) -> torch.Tensor:
    """View of the covered area of ``v`` (``(N, H, W)``) as tiles: ``(N, nH, window, nW, window)`` (no copy)."""
    return v[:, : nh * window, : nw * window].reshape(v.shape[0], nh, window, nw, window)


def _tile_pairs(v: torch.Tensor, offset: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """
    For tiles ``v`` (``(N, nH, window, nW, window)``) and a canonical offset ``(dr, dc)``, the first and
    second pixels of the pairs ``(p, p + offset)`` that lie inside one tile: two views
    ``(N, nH, window - dr, nW, window - |dc|)``. Summing them over dims 2 and 4 sums over the in-tile pairs.
    """
    dr, dc = offset
    window = v.shape[2]
    kh, kw, c0 = window - dr, window - abs(dc), max(0, -dc)
    return v[:, :, :kh, :, c0 : c0 + kw], v[:, :, dr:, :, c0 + dc : c0 + dc + kw]


def _difference_table(levels: int, names: Sequence[str], soft: bool) -> torch.Tensor:
    """
    Weights that turn per-window histograms over the level difference ``D = a_p - a_q`` into sums of the
    features linear in ``P`` (float64, ``((2L - 1) * C, len(names))``, row ``(D + L - 1) * C + c``).

    A pair with soft memberships ``(1 - t_p, t_p)`` on levels ``(a_p, a_p + 1)`` and ``(1 - t_q, t_q)``
    on ``(a_q, a_q + 1)`` adds to a feature with weight ``g(i - j)`` the amount
    ``g(D) + t_p (g(D+1) - g(D)) + t_q (g(D-1) - g(D)) + t_p t_q (2 g(D) - g(D+1) - g(D-1))``, so the
    channels are the histograms of ``1``, ``t_p``, ``t_q`` and ``t_p t_q``; hard mode uses the first only.
    """
    d = torch.arange(-levels, levels + 1, dtype=torch.float64)
    g = torch.stack([_LINEAR_WEIGHTS[f](d) for f in names], 1)  # g(D) for D in [-L, L]
    g0, gp, gm = g[1:-1], g[2:], g[:-2]  # g(D), g(D + 1), g(D - 1) for D in [-(L-1), L-1]
    if not soft:
        return g0
    return torch.stack((g0, gp - g0, gm - g0, 2 * g0 - gp - gm), 1).flatten(0, 1)


def _region_sums(v: torch.Tensor, offset: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Sums of tiled per-pixel values ``v`` (``(..., nH, window, nW, window)``) over the first and over the
    second pixels of the in-tile pairs of ``offset`` (the two views of :func:`_tile_pairs`):
    two ``(..., nH, nW)`` tensors. Whole-tile column sums minus the few excluded columns, then row ranges.
    """
    dr, dc = offset
    window = v.shape[-1]
    kw, c0 = window - abs(dc), max(0, -dc)
    full = v.sum(-1)  # (..., nH, window, nW)

    def columns(start: int) -> torch.Tensor:  # row sums over columns [start, start + kw)
        out = full
        if start > 0:
            out = out - v[..., :start].sum(-1)
        if start + kw < window:
            out = out - v[..., start + kw :].sum(-1)
        return out

    return columns(c0)[..., : window - dr, :].sum(-2), columns(c0 + dc)[..., dr:, :].sum(-2)


def _tile_features(
    x: torch.Tensor,
    levels: int,
    offsets: list,
    window: int,
    nh: int,
    nw: int,
    soft: bool,
    width: float,
    features: tuple[str, ...],
) -> torch.Tensor:
    """
    Features of non-overlapping tiles (``stride == window``) for the canonical ``offsets``:
    ``(N, O, nH, nW, F)``. The tiles are views of the image (no unfold copy), and each pair is the same
    element of two shifted views (:func:`_tile_pairs`), so per-tile sums over pairs are reductions.

    - features linear in ``P`` (contrast, dissimilarity, both homogeneities): a per-tile histogram of the
      level difference ``D = a_p - a_q`` of the pairs (one ``index_add``; in soft mode also of ``t_p``,
      ``t_q`` and ``t_p t_q``) times the weights of :func:`_difference_table`;
    - correlation: the marginal moments are per-tile sums of the level ``i`` (soft: ``a + t``) and of
      ``E[i^2]`` (soft: ``(a + t)^2 + t (1 - t)``) over the first and over the second pixels, with levels
      shifted by the tile's top-left level (which changes nothing but keeps the sums small), and
      ``E[ij] = (E[i^2] + E[j^2] - contrast) / 2`` (:func:`_correlation_from_moments`);
    - asm, energy and entropy: the joint matrix, accumulated for a chunk of images at a time.
    """
    flat = x.reshape(-1, x.shape[-2], x.shape[-1]).contiguous()
    n_img, dtype, device = flat.shape[0], x.dtype, x.device
    lv, nd = levels, 2 * levels - 1
    n_tiles = n_img * nh * nw
    linear = [f for f in features if f in _LINEAR_WEIGHTS]
    want_corr = "correlation" in features
    want_joint = any(f in _JOINT_FEATURES for f in features)
    diff_names = linear + (["contrast"] if want_corr else [])
    # hard sums are whole numbers below window^2 (L - 1)^2: exact in float32 while that is below 2**24
    exact32 = window * window * (lv - 1) ** 2 < 2**24
    acc = dtype if (soft or dtype == torch.float64 or exact32) else torch.float64

    if soft:
        level, t = _soft_lower_bin(flat, lv, width)
        level = level.int()
        t_tiles = _tiled(t, window, nh, nw)
    else:
        level, t, t_tiles = quantize(flat.detach(), lv).int(), None, None
    lev_tiles = _tiled(level, window, nh, nw)
    if want_corr:
        mean_level = _tiled(level.to(acc) if t is None else level.to(acc) + t.to(acc), window, nh, nw)
        centred = mean_level - mean_level[..., :1, :, :1].detach()  # minus the tile's top-left level
        second = centred * centred
        if t_tiles is not None:  # E[i^2] of one pixel: (a + t)^2 + t (1 - t)
            second = second + t_tiles * (1 - t_tiles)
        moment_maps = torch.stack((centred, second))
    # soft mode with the joint matrix needed anyway: the linear features come from it too (one matmul)
    from_joint = soft and want_joint and bool(diff_names)
    table = None
    if diff_names and not from_joint:
        table = _difference_table(lv, diff_names, soft).to(device=device, dtype=acc)
    if from_joint:
        diff = torch.arange(lv, device=device, dtype=torch.float64)
        diff = (diff[:, None] - diff[None, :]).reshape(-1)
        joint_table = torch.stack([_LINEAR_WEIGHTS[f](diff) for f in diff_names], 1).to(acc)  # (L*L, k)
    tile_index = torch.arange(n_tiles, device=device, dtype=torch.int32).view(n_img, nh, 1, nw, 1)
    if want_joint:
        # the joint matrices of a chunk of images at a time (at most _TILE_CHUNK_CELLS cells)
        # soft: larger chunks, as every slice of t costs a full-size zero-filled gradient in backward
        chunk = max(1, (_TILE_CHUNK_CELLS * (4 if soft else 1)) // (nh * nw * lv * lv))
        row_level = lev_tiles * lv
        joint_base = tile_index[:chunk] * (lv * lv)

    out, buffer = [], None
    for offset in offsets:  # at most four canonical offsets per distance
        n_pairs = (window - offset[0]) * (window - abs(offset[1]))
        a_p, a_q = _tile_pairs(lev_tiles, offset)
        if soft:
            t_p, t_q = _tile_pairs(t_tiles, offset)
        vals: dict[str, torch.Tensor] = {}
        if table is not None:
            key = ((a_p - a_q) + (tile_index * nd + (lv - 1))).reshape(-1)
            ones = torch.ones(1, dtype=acc, device=device).expand(key.numel())
            hist = [torch.zeros(n_tiles * nd, dtype=acc, device=device).index_add_(0, key, ones)]
            if soft:
                for v in (t_p, t_q, t_p * t_q):
                    hist.append(torch.zeros(n_tiles * nd, dtype=acc, device=device).index_add_(0, key, v.reshape(-1)))
            sums = torch.stack(hist, 1).view(n_tiles, -1) @ table  # (n_tiles, len(diff_names))
            vals.update({f: sums[:, k] / n_pairs for k, f in enumerate(diff_names)})
        if want_joint:
            (r_p, _), (_, c_q) = _tile_pairs(row_level, offset), (a_p, a_q)
            parts = []
            for s in range(0, n_img, chunk):  # chunks of whole images, not single windows
                e = min(s + chunk, n_img)
                n_win = (e - s) * nh * nw
                key = ((r_p[s:e] + c_q[s:e]) + joint_base[: e - s]).reshape(-1)
                ones = torch.ones(1, dtype=acc, device=device).expand(key.numel())
                if soft:
                    cells = _soft_joint(key, t_p[s:e], t_q[s:e], n_win, lv)
                else:
                    if buffer is None or buffer.numel() < n_win * lv * lv:
                        buffer = torch.empty(n_win * lv * lv, dtype=acc, device=device)
                    cells = buffer[: n_win * lv * lv].zero_().index_add_(0, key, ones)
                cells = cells.view(n_win, lv * lv)
                part = {}
                if from_joint:
                    sums = cells @ joint_table
                    part.update({f: sums[:, k] / n_pairs for k, f in enumerate(diff_names)})
                if "asm" in features or "energy" in features:
                    part["asm"] = torch.linalg.vecdot(cells, cells) / (n_pairs * n_pairs)
                if "entropy" in features:
                    p = cells / n_pairs
                    part["entropy"] = -torch.linalg.vecdot(p, torch.log(torch.where(p > 0, p, torch.ones_like(p))))
                parts.append(part)
            for name in parts[0]:
                vals[name] = torch.cat([part[name] for part in parts])
            if "asm" in vals:
                vals["energy"] = torch.sqrt(vals["asm"])  # asm >= 1 / L^2 > 0
        if want_corr:
            first, second_ = _region_sums(moment_maps, offset)
            moments = torch.stack((first[0], second_[0], first[1], second_[1])).reshape(4, -1)
            vals["correlation"] = _correlation_from_moments(moments, vals["contrast"], n_pairs)
        out.append(torch.stack([vals[f].to(dtype) for f in features], -1).view(n_img, nh, nw, -1))
    return torch.stack(out, 1)


def _soft_joint(key: torch.Tensor, t_p: torch.Tensor, t_q: torch.Tensor, n_win: int, levels: int) -> torch.Tensor:
    """
    Unnormalised soft joint matrices ``(n_win, L, L)`` of pairs with corner cells ``key`` (``a_p L + a_q``
    plus the window's base) and ramps ``t_p``, ``t_q``. A pair adds ``(1-t_p)(1-t_q)``, ``t_p(1-t_q)``,
    ``(1-t_p)t_q``, ``t_p t_q`` at ``(a_p, a_q)``, ``(a_p+1, a_q)``, ``(a_p, a_q+1)``, ``(a_p+1, a_q+1)``;
    expanding the products, it is enough to accumulate ``1``, ``t_p``, ``t_q`` and ``t_p t_q`` at the
    corner (grids ``G1, Gp, Gq, Gpq``) and combine shifted grids:
    ``G1 - Gp - Gq + Gpq + down(Gp - Gpq) + right(Gq - Gpq) + down(right(Gpq))``.
    """
    def grid(v: torch.Tensor | None) -> torch.Tensor:
        out = torch.zeros(n_win * levels * levels, dtype=t_p.dtype, device=t_p.device)
        src = torch.ones(1, dtype=t_p.dtype, device=t_p.device).expand(key.numel()) if v is None else v.reshape(-1)
        return out.index_add_(0, key, src).view(n_win, levels, levels)

    g1, gp, gq, gpq = grid(None), grid(t_p), grid(t_q), grid(t_p * t_q)
    # corners have a_p, a_q <= L - 2, so the last row and column of every grid are zero
    down = gp - gpq
    right = gq - gpq
    return (
        (g1 - gp - gq + gpq)
        + F.pad(down[:, :-1, :], (0, 0, 1, 0))
        + F.pad(right[:, :, :-1], (1, 0, 0, 0))
        + F.pad(gpq[:, :-1, :-1], (1, 0, 1, 0))
    )


def _correlation_from_moments(moments: torch.Tensor, contrast: torch.Tensor, n: int) -> torch.Tensor:
    """
    Correlation from the sums ``(S_i, S_j, S_ii, S_jj)`` of the (shifted) levels of the first and second
    pixels over the ``n`` in-window pairs and the mean contrast ``E[(i - j)^2]``:
    ``n^2 var_i = n S_ii - S_i^2``, ``S_ij = (S_ii + S_jj - n contrast) / 2``, ``n^2 cov = n S_ij - S_i S_j``,
    combined in float64. 1 where a variance is 0 (hard mode: exactly when a marginal sits on one level,
    the sums being whole numbers) or below scikit-image's threshold.
    """
    s_i, s_j, s_ii, s_jj = moments.double()
    s_ij = (s_ii + s_jj - n * contrast.double()) / 2
    var_i, var_j = n * s_ii - s_i * s_i, n * s_jj - s_j * s_j
    cov = n * s_ij - s_i * s_j
    tiny = (n * _CORRELATION_STD_EPS) ** 2
    flat = (var_i <= tiny) | (var_j <= tiny)
    one = torch.ones_like(var_i)
    denom = torch.sqrt(torch.where(flat, one, var_i)) * torch.sqrt(torch.where(flat, one, var_j))
    return torch.where(flat, one, cov / denom)


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
    Normalised (sum 1), asymmetric co-occurrence matrices of every window.

    Args:
        x: intensities on [0, 1], shape ``(B, C, H, W)``, float32 or float64, any device.
        levels: number of gray levels ``L`` (>= 2).
        distance: pixel distance ``d`` of the pairs (>= 1).
        angles: angles in degrees; offset ``(round(sin t * d), round(cos t * d))`` (see :func:`glcm_offset`).
        window: side of the square windows (<= H and W).
        stride: step between windows; ``None`` means ``window`` (non-overlapping tiles). Windows are
            placed at ``0, stride, 2 * stride, ...`` while they fit: a partial tile at the bottom or
            right border is dropped, as ``torch.nn.functional.unfold`` does.
        soft: hard one-hot memberships (``False``, not differentiable) or soft ones (``True``, see
            :func:`soft_memberships`).
        width: width of the soft kernel in gray levels, in (0, 1]; ignored when ``soft`` is False.

    Returns:
        ``P`` of shape ``(B, C, A, nH, nW, L, L)``, with ``P[..., i, j]`` the fraction of in-window pairs
        ``(p, p + offset)`` with ``x_p`` at level ``i`` and ``x_{p + offset}`` at level ``j``, and
        ``nH = (H - window) // stride + 1`` (likewise ``nW``).
    """
    mats, plan = _per_offset(x, levels, distance, angles, window, stride, soft, width, lambda p: p)
    out = [mats[:, k].transpose(-1, -2) if transposed else mats[:, k] for k, transposed in plan]
    out = torch.stack(out, 1)
    return out.reshape(*x.shape[:2], *out.shape[1:])


def glcm_features_from_matrix(p: torch.Tensor, features: Sequence[str] = PAPER_FEATURES) -> torch.Tensor:
    """
    Texture features of normalised co-occurrence matrices ``p`` (``(..., L, L)``, each summing to 1),
    stacked in a new last dimension in the order of ``features``:

    - ``asm``: :math:`\\sum_{ij} P_{ij}^2`; ``energy``: :math:`\\sqrt{\\mathrm{asm}}`
    - ``contrast``: :math:`\\sum_{ij} P_{ij} (i - j)^2`; ``dissimilarity``: :math:`\\sum_{ij} P_{ij} |i - j|`
    - ``homogeneity`` (the paper): :math:`\\sum_{ij} P_{ij} / (1 + |i - j|)`
    - ``homogeneity_skimage`` (scikit-image's "homogeneity"): :math:`\\sum_{ij} P_{ij} / (1 + (i - j)^2)`
    - ``correlation``: :math:`\\sum_{ij} P_{ij} (i - \\mu_i)(j - \\mu_j) / (\\sigma_i \\sigma_j)`, and 1
      where a marginal of ``P`` sits on a single level or :math:`\\sigma_i` or :math:`\\sigma_j` is below
      1e-15 (a flat window), as scikit-image intends
    - ``entropy``: :math:`-\\sum_{ij} P_{ij} \\ln P_{ij}` (natural log, :math:`0 \\ln 0 = 0`, as scikit-image)

    All gradients are finite, including for one-hot ``p`` (flat windows).
    """
    features = _check_features(features)
    levels = p.shape[-1]
    out: dict[str, torch.Tensor] = {}
    linear = [f for f in features if f in _LINEAR_WEIGHTS]
    if linear:
        lv = torch.arange(levels, dtype=p.dtype, device=p.device)
        diff = lv[:, None] - lv[None, :]
        weights = torch.stack([_LINEAR_WEIGHTS[f](diff).reshape(-1) for f in linear], 1)  # (L*L, nlinear)
        values = p.reshape(*p.shape[:-2], levels * levels) @ weights
        out.update({f: values[..., k] for k, f in enumerate(linear)})
    if "asm" in features or "energy" in features:
        asm = (p * p).sum((-1, -2))
        out["asm"] = asm
        out["energy"] = torch.sqrt(asm)  # asm >= 1 / L^2 > 0 because p sums to 1
    if "entropy" in features:
        positive = p > 0
        out["entropy"] = -(p * torch.log(torch.where(positive, p, torch.ones_like(p)))).sum((-1, -2))
    if "correlation" in features:
        out["correlation"] = _correlation(p)
    return torch.stack([out[f] for f in features], -1)


def _correlation(p: torch.Tensor) -> torch.Tensor:
    lv = torch.arange(p.shape[-1], dtype=p.dtype, device=p.device)
    row, col = p.sum(-1), p.sum(-2)  # marginals of i and j
    di = lv - (row * lv).sum(-1, keepdim=True)
    dj = lv - (col * lv).sum(-1, keepdim=True)
    var_i = (row * di * di).sum(-1)
    var_j = (col * dj * dj).sum(-1)
    cov = (di * (p @ dj.unsqueeze(-1)).squeeze(-1)).sum(-1)
    # a marginal on a single level has zero variance exactly; test its support rather than a rounded var
    single = ((row > 0).sum(-1) <= 1) | ((col > 0).sum(-1) <= 1)
    flat = single | (var_i < _CORRELATION_STD_EPS**2) | (var_j < _CORRELATION_STD_EPS**2)
    one = torch.ones_like(var_i)
    denom = torch.sqrt(torch.where(flat, one, var_i)) * torch.sqrt(torch.where(flat, one, var_j))
    return torch.where(flat, one, cov / denom)


def glcm_features(
    x: torch.Tensor,
    levels: int = 32,
    distance: int = 3,
    angles: Sequence[float] = DEFAULT_ANGLES,
    window: int = 20,
    stride: int | None = None,
    features: Sequence[str] = PAPER_FEATURES,
    soft: bool = False,
    width: float = 1.0,
) -> torch.Tensor:
    """
    GLCM texture features of every window, every requested angle and every channel.

    Arguments are those of :func:`glcm`, plus ``features``, names from :data:`SUPPORTED_FEATURES`
    (default: the paper's :data:`PAPER_FEATURES`). Only the distinct offsets are computed: ``theta`` and
    ``theta + 180`` share one matrix up to transposition, and every supported feature is invariant
    under transposition, so their values are equal.

    Returns:
        features of shape ``(B, C, F, A, nH, nW)``, in the dtype and on the device of ``x``;
        differentiable with respect to ``x`` when ``soft`` is True.
    """
    features = _check_features(features)
    if stride is None or stride == window:
        _check_image(x)
        _check_levels(levels)
        _check_int("distance", distance, 1)
        angles = _check_angles(angles)
        _, nh, nw = _window_grid(x.shape[-2], x.shape[-1], window, stride)
        offsets, plan = _plan_offsets(distance, angles, window)
        if soft:
            _check_width(width)
        values = _tile_features(x, levels, offsets, window, nh, nw, soft, width, features)
    else:
        values, plan = _per_offset(
            x, levels, distance, angles, window, stride, soft, width, lambda p: glcm_features_from_matrix(p, features)
        )  # (N, O, nH, nW, F)
    index = torch.tensor([k for k, _ in plan], device=x.device)
    values = values.index_select(1, index).permute(0, 4, 1, 2, 3)  # (N, F, A, nH, nW)
    return values.reshape(*x.shape[:2], *values.shape[1:])


def sot_matrix(features: torch.Tensor) -> torch.Tensor:
    """
    The paper's "SOT" matrix: one row per window, one column per (feature, angle) pair.

    Args:
        features: ``(B, C, F, A, nH, nW)`` as returned by :func:`glcm_features`.

    Returns:
        ``(B, C, nH * nW, F * A)``; rows in raster order of the windows, columns feature-major
        (column ``f * A + a`` holds feature ``f`` at angle ``a``).
    """
    if not isinstance(features, torch.Tensor) or features.ndim != 6:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"features must have shape (B, C, F, A, nH, nW), got {shape}.")
    b, c, f, a, nh, nw = features.shape
    return features.reshape(b, c, f * a, nh * nw).transpose(-1, -2)
