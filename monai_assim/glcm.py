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
from torch.autograd.function import once_differentiable

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


def _validate(x, levels, distance, angles, window, stride, soft, width):
    """
    Check every argument of the GLCM functions; returns ``(stride, nH, nW, offsets, plan)`` with the
    window grid of :func:`_window_grid` and the offset plan of :func:`_plan_offsets`.
    """
    _check_image(x)
    _check_levels(levels)
    _check_int("distance", distance, 1)
    angles = _check_angles(angles)
    stride, nh, nw = _window_grid(x.shape[-2], x.shape[-1], window, stride)
    offsets, plan = _plan_offsets(distance, angles, window)
    if soft:
        _check_width(width)
    return stride, nh, nw, offsets, plan


def _per_offset(x, levels, distance, angles, window, stride, soft, width, reduce):
    """
    Validate, then for every distinct canonical offset build the windows' matrices chunk by chunk and
    map each chunk through ``reduce`` (``(n, L, L) -> (n, ...)``). Returns the stacked results
    ``(N, O, nH, nW, ...)`` and the angle plan of :func:`_plan_offsets`.
    """
    stride, _, _, offsets, plan = _validate(x, levels, distance, angles, window, stride, soft, width)
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


def _region_masks(offsets: list, window: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The in-tile regions of the first (column ``2 k``) and of the second (column ``2 k + 1``) pixels of the
    pairs of offset ``k`` (see :func:`_tile_pairs`) are rectangles: their 0/1 row and column indicators,
    two ``(window, 2 * O)`` tensors.
    """
    rows = torch.zeros(window, 2 * len(offsets), dtype=dtype)
    cols = torch.zeros(window, 2 * len(offsets), dtype=dtype)
    for k, (dr, dc) in enumerate(offsets):
        kh, kw, c0 = window - dr, window - abs(dc), max(0, -dc)
        rows[:kh, 2 * k] = 1
        cols[c0 : c0 + kw, 2 * k] = 1
        rows[dr:, 2 * k + 1] = 1
        cols[c0 + dc : c0 + dc + kw, 2 * k + 1] = 1
    return rows.to(device), cols.to(device)


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
      ``E[i^2]`` (soft: ``(a + t)^2 + t (1 - t)``) over the first and over the second pixels (one matmul
      of the tiles with the 0/1 masks of :func:`_region_masks`), with levels
      shifted by the tile's top-left level (which changes nothing but keeps the sums small), and
      ``E[ij] = (E[i^2] + E[j^2] - contrast) / 2`` (:func:`_correlation_from_moments`);
    - asm, energy and entropy: the joint matrix (hard: accumulated for a chunk of images at a time and
      reduced at once; soft: for all tiles, and then the linear features come from it too).

    In soft mode the per-tile sums come from :class:`_SoftTileSums`, whose backward computes the gradient
    with respect to ``x`` directly.
    """
    flat = x.reshape(-1, x.shape[-2], x.shape[-1]).contiguous()
    n_img, dtype, device = flat.shape[0], x.dtype, x.device
    lv, nd = levels, 2 * levels - 1
    n_tiles = n_img * nh * nw
    linear = [f for f in features if f in _LINEAR_WEIGHTS]
    want_corr = "correlation" in features
    want_joint = any(f in _JOINT_FEATURES for f in features)
    diff_names = linear + (["contrast"] if want_corr else [])
    want_asm = "asm" in features or "energy" in features

    per_offset: list[dict[str, torch.Tensor]] = [{} for _ in offsets]
    if soft:
        # per-tile statistics from the custom autograd function: the features linear in P (as sums over
        # pairs), and the unnormalised sum C_ij^2 and entropy of the joint matrix where asked
        joint = want_joint
        names = diff_names + (["asm"] if want_asm else []) + (["entropy"] if "entropy" in features else [])
        stats, region_sums = _SoftTileSums.apply(flat, lv, width, tuple(offsets), window, nh, nw, joint, tuple(names), want_corr)
        for o, offset in enumerate(offsets):
            n_pairs = (window - offset[0]) * (window - abs(offset[1]))
            vals = per_offset[o]
            for k, f in enumerate(names):
                vals[f] = stats[o, :, k] if f == "entropy" else stats[o, :, k] / (n_pairs * n_pairs if f == "asm" else n_pairs)
    else:
        # hard sums are whole numbers below window^2 (L - 1)^2: exact in float32 while that is below 2**24
        exact32 = window * window * (lv - 1) ** 2 < 2**24
        acc = dtype if (dtype == torch.float64 or exact32) else torch.float64
        level = torch.clamp(torch.floor(flat.detach() * lv), 0, lv - 1)  # quantize(), kept as floats
        index_dtype = _index_dtype(n_tiles, lv)
        lev_tiles = _tiled(level.to(index_dtype), window, nh, nw)
        region_sums = _region_sums(_tiled(level, window, nh, nw), None, offsets, acc) if want_corr else None
        tile_index = torch.arange(n_tiles, device=device, dtype=index_dtype).view(n_img, nh, 1, nw, 1)
        if diff_names:
            table = _difference_table(lv, diff_names, False).to(device=device, dtype=acc)
            # per pixel: its tile's histogram base plus its level, so that a pair's bin is one subtraction
            first_key = tile_index * nd + (lev_tiles + (lv - 1))
        if want_joint:
            # the joint matrices of a chunk of whole images at a time (at most _TILE_CHUNK_CELLS cells),
            # indexed relative to the chunk so that a pair's cell is one addition
            chunk = max(1, _TILE_CHUNK_CELLS // (nh * nw * lv * lv))
            local = (tile_index.view(n_img, -1) % (chunk * nh * nw)).view(n_img, nh, 1, nw, 1)
            joint_key = local * (lv * lv) + lev_tiles * lv
            buffer = torch.empty(min(chunk, n_img) * nh * nw * lv * lv, dtype=acc, device=device)
        for o, offset in enumerate(offsets):  # at most four canonical offsets per distance
            n_pairs = (window - offset[0]) * (window - abs(offset[1]))
            _, a_q = _tile_pairs(lev_tiles, offset)
            vals = per_offset[o]
            if diff_names:
                key = (_tile_pairs(first_key, offset)[0] - a_q).reshape(-1)  # contiguous: no copy
                ones = torch.ones(1, dtype=acc, device=device).expand(key.numel())
                hist = torch.zeros(n_tiles * nd, dtype=acc, device=device).index_add_(0, key, ones)
                sums = hist.view(n_tiles, nd) @ table  # (n_tiles, len(diff_names))
                vals.update({f: sums[:, k] / n_pairs for k, f in enumerate(diff_names)})
            if want_joint:
                key = _tile_pairs(joint_key, offset)[0] + a_q  # (N, nH, kh, nW, kw), contiguous
                parts = []
                for s in range(0, n_img, chunk):  # chunks of whole images, not single windows
                    e = min(s + chunk, n_img)
                    k = key[s:e].reshape(-1)
                    ones = torch.ones(1, dtype=acc, device=device).expand(k.numel())
                    cells = buffer[: (e - s) * nh * nw * lv * lv].zero_().index_add_(0, k, ones).view(-1, lv * lv)
                    part = {}
                    if want_asm:
                        part["asm"] = torch.linalg.vecdot(cells, cells) / (n_pairs * n_pairs)
                    if "entropy" in features:
                        p = cells / n_pairs
                        part["entropy"] = -torch.linalg.vecdot(p, torch.log(torch.where(p > 0, p, torch.ones_like(p))))
                    parts.append(part)
                vals.update({name: torch.cat([part[name] for part in parts]) for name in parts[0]})

    out = []
    for o, offset in enumerate(offsets):
        vals = per_offset[o]
        n_pairs = (window - offset[0]) * (window - abs(offset[1]))
        if "asm" in vals:
            vals["energy"] = torch.sqrt(vals["asm"])  # asm >= 1 / L^2 > 0
        if want_corr:
            moments = region_sums[:, :, 2 * o : 2 * o + 2].permute(0, 2, 1).reshape(4, n_tiles)  # S_i, S_j, S_ii, S_jj
            vals["correlation"] = _correlation_from_moments(moments, vals["contrast"], n_pairs)
        out.append(torch.stack([vals[f].to(dtype) for f in features], -1).view(n_img, nh, nw, -1))
    return torch.stack(out, 1)


def _index_dtype(n_tiles: int, levels: int) -> torch.dtype:
    """int32 indices (cheaper element-wise ops) unless a per-tile histogram or joint index could overflow them."""
    return torch.int32 if n_tiles * max(2 * levels - 1, levels * levels) < 2**31 else torch.int64


def _region_sums(
    lev_tiles: torch.Tensor, t_tiles: torch.Tensor | None, offsets: list, acc: torch.dtype
) -> torch.Tensor:
    """
    Per-tile sums over the first and the second pixels of the pairs of every offset of the (shifted)
    level ``c = i - i_0`` (soft: ``a + t - (a_0 + t_0)``) and of ``E[c^2]`` (soft: ``c^2 + t (1 - t)``),
    ``i_0`` the level of the tile's top-left pixel: ``(2, n_tiles, 2 * O)`` (one matmul with the masks
    of :func:`_region_masks`).
    """
    n_img, nh, window, nw, _ = lev_tiles.shape
    lev_tiles = lev_tiles.to(acc)
    mean_level = lev_tiles if t_tiles is None else lev_tiles + t_tiles
    centred = mean_level - mean_level[..., :1, :, :1]
    second = centred * centred
    if t_tiles is not None:
        second = second + t_tiles * (1 - t_tiles)
    rows, cols = _region_masks(offsets, window, acc, lev_tiles.device)
    # sum over the columns of each region (a matmul on the contiguous last dim), then over its rows
    out = [torch.einsum("nhwmr,wr->nhmr", v @ cols, rows).reshape(n_img * nh * nw, -1) for v in (centred, second)]
    return torch.stack(out)


def _soft_ramp(x: torch.Tensor, levels: int, width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, t)`` of :func:`_soft_lower_bin` without autograd, ``a`` in the dtype of ``x``."""
    edge = torch.clamp(torch.round(x * levels), 1, levels - 1)
    return edge - 1, torch.clamp((x - edge / levels) * (levels / width) + 0.5, 0.0, 1.0)


class _SoftTileSums(torch.autograd.Function):
    """
    Per-tile statistics of the soft co-occurrences of non-overlapping tiles, with a hand-written backward.

    Every pixel has memberships ``(u, t) = (1 - t, t)`` on levels ``(a, a + 1)`` (:func:`_soft_lower_bin`).
    For each canonical offset, forward (no autograd graph) accumulates into one reused buffer either the
    unnormalised joint matrices ``C = sum_pairs m(p) m(q)^T`` (``joint``; a pair adds ``u_p u_q``,
    ``t_p u_q``, ``u_p t_q``, ``t_p t_q`` at ``(a_p, a_q)``, ``(a_p + 1, a_q)``, ``(a_p, a_q + 1)``,
    ``(a_p + 1, a_q + 1)``: one ``index_add`` each, into shifted views of the buffer), or the histograms
    over ``D = a_p - a_q`` of ``1, t_p, t_q, t_p t_q`` (see :func:`_difference_table`), and reduces them
    at once to the statistics ``names`` (sums over pairs of the linear features; ``asm``: ``sum C^2``;
    ``entropy``: of ``C / N_o``): ``(O, n_tiles, len(names))``. With ``corr`` it also returns the region
    sums of :func:`_region_sums` (``(2, n_tiles, 2 O)``).

    Backward first turns the incoming gradient into ``G = dloss/dC`` (or ``dloss/dhist``) per offset.
    ``C`` is bilinear in ``(t_p, t_q)``, so a pair contributes ``dt_p = G_p[k] + t_q G_x[k]`` and
    ``dt_q = G_q[k] + t_p G_x[k]``, with ``k`` the pair's corner cell or bin and ``G_p, G_q, G_x`` the
    differences of ``G`` along rows, columns and both (joint) or its ``t_p, t_q, t_p t_q`` channels
    (histograms): three gathers per pair. They are added to one gradient tensor of the image through
    in-place views (the first and the second pixels of the pairs), which is finally multiplied by
    ``dt/dx`` (:func:`_soft_ramp`). Double backward is not supported.
    """

    @staticmethod
    def forward(ctx, x, levels, width, offsets, window, nh, nw, joint, names, corr):
        ctx.set_materialize_grads(False)
        state = _SoftTileState(x, levels, width, window, nh, nw, joint)
        lv, n_tiles, dtype, device = levels, state.n_tiles, x.dtype, x.device
        table = _stat_table(lv, names, joint, dtype, device)
        keep = ctx.needs_input_grad[0] and joint and ("asm" in names or "entropy" in names)
        size = n_tiles * lv * lv if joint else 4 * n_tiles * (2 * lv - 1)
        buffer = torch.empty(size, dtype=dtype, device=device)
        u_tiles = 1 - state.t_tiles if joint else None
        stats, saved = [], []
        for offset in offsets:
            n_pairs = (window - offset[0]) * (window - abs(offset[1]))
            key = state.key(offset)
            t_p, t_q = _tile_pairs(state.t_tiles, offset)
            buffer.zero_()
            cols = []
            if joint:
                u_p, u_q = _tile_pairs(u_tiles, offset)
                buffer.index_add_(0, key, (u_p * u_q).reshape(-1))
                buffer[lv:].index_add_(0, key, (t_p * u_q).reshape(-1))  # cell (a_p + 1, a_q)
                buffer[1:].index_add_(0, key, (u_p * t_q).reshape(-1))  # cell (a_p, a_q + 1)
                buffer[lv + 1 :].index_add_(0, key, (t_p * t_q).reshape(-1))  # cell (a_p + 1, a_q + 1)
                cells = buffer.view(n_tiles, lv * lv)
                if table is not None:
                    cols.append(cells @ table)
                if "asm" in names:
                    cols.append(torch.linalg.vecdot(cells, cells).unsqueeze(-1))
                if "entropy" in names:
                    p = cells / n_pairs
                    cols.append(-torch.linalg.vecdot(p, torch.log(torch.where(p > 0, p, torch.ones_like(p)))).unsqueeze(-1))
                if keep:
                    saved.append(cells.clone())
            else:
                hist = buffer.view(4, -1)
                hist[0].index_add_(0, key, torch.ones(1, dtype=dtype, device=device).expand(key.numel()))
                hist[1].index_add_(0, key, t_p.reshape(-1))
                hist[2].index_add_(0, key, t_q.reshape(-1))
                hist[3].index_add_(0, key, (t_p * t_q).reshape(-1))
                cols.append(hist.view(4, n_tiles, -1).permute(1, 2, 0).reshape(n_tiles, -1) @ table)
            stats.append(torch.cat(cols, -1))
        if corr:
            region = _region_sums(state.lower_tiles, state.t_tiles, list(offsets), dtype)
        else:
            region = torch.zeros(0, dtype=dtype, device=device)
        ctx.save_for_backward(x, *saved)
        ctx.args = (levels, width, offsets, window, nh, nw, joint, names, corr)
        return torch.stack(stats), region

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_stats, grad_region):
        x, *saved = ctx.saved_tensors
        levels, width, offsets, window, nh, nw, joint, names, corr = ctx.args
        state = _SoftTileState(x, levels, width, window, nh, nw, joint)
        lv, n_tiles = levels, state.n_tiles
        grad_t = torch.zeros_like(x)
        grad_tiles = _tiled(grad_t, window, nh, nw)
        if grad_stats is not None:
            table = _stat_table(lv, names, joint, x.dtype, x.device)
            n_lin = 0 if table is None else table.shape[1]
            for o, offset in enumerate(offsets):
                n_pairs = (window - offset[0]) * (window - abs(offset[1]))
                g_stat = grad_stats[o]  # (n_tiles, len(names))
                # G = dloss / d(joint cells) or d(histogram bins), (n_tiles, cells)
                if table is not None:
                    g = g_stat[:, :n_lin] @ table.t()
                else:
                    g = torch.zeros(n_tiles, lv * lv, dtype=x.dtype, device=x.device)
                col = n_lin
                if "asm" in names:
                    g.addcmul_(saved[o], 2 * g_stat[:, col : col + 1])
                    col += 1
                if "entropy" in names:
                    p = saved[o] / n_pairs
                    dent = -(torch.log(torch.where(p > 0, p, torch.ones_like(p))) + (p > 0).to(p.dtype)) / n_pairs
                    g.addcmul_(dent, g_stat[:, col : col + 1])
                t_p, t_q = _tile_pairs(state.t_tiles, offset)
                key = state.key(offset)
                if joint:
                    # differences of G along rows, columns and both at the corners (flat shifted views; the
                    # entries past a row or a tile are garbage but never gathered, as a_p, a_q <= L - 2)
                    g = g.view(-1)
                    m = g.numel()
                    diffs = torch.empty(3, m, dtype=g.dtype, device=g.device)
                    torch.sub(g[lv:], g[:-lv], out=diffs[0, : m - lv])
                    torch.sub(g[1:], g[:-1], out=diffs[1, : m - 1])
                    torch.sub(diffs[0, 1 : m - lv], diffs[0, : m - lv - 1], out=diffs[2, : m - lv - 1])
                else:
                    diffs = g.view(-1, 4).t()[1:]  # channels t_p, t_q, t_p t_q, (3, n_tiles * (2L - 1))
                g_p, g_q, g_x = (diffs[c].index_select(0, key).view(t_p.shape) for c in range(3))
                first, second = _tile_pairs(grad_tiles, offset)
                first.add_(torch.addcmul(g_p, t_q, g_x))
                second.add_(torch.addcmul(g_q, t_p, g_x))
        if corr and grad_region is not None:
            rows, cols = _region_masks(list(offsets), window, grad_region.dtype, grad_region.device)
            g = grad_region.view(2, x.shape[0], nh, 1, nw, -1) * rows.view(window, 1, -1)
            g = g @ cols.t()  # (2, N, nH, window, nW, window): the layout of the tiles
            t_tiles = state.t_tiles
            mean_level = state.lower_tiles + t_tiles
            centred = mean_level - mean_level[..., :1, :, :1]  # the shift is a constant (detached)
            grad_tiles.add_(g[0] + g[1] * (2 * centred + 1 - 2 * t_tiles))
        return (grad_t.mul_(state.slope()),) + (None,) * 9


def _stat_table(levels: int, names: tuple, joint: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """Weights from the joint cells ``(L * L, k)`` or the soft difference histograms to the linear features of ``names``."""
    linear = [f for f in names if f in _LINEAR_WEIGHTS]
    if not linear:
        return None
    if not joint:
        return _difference_table(levels, linear, True).to(device=device, dtype=dtype)
    diff = torch.arange(levels, dtype=torch.float64)
    diff = (diff[:, None] - diff[None, :]).reshape(-1)
    return torch.stack([_LINEAR_WEIGHTS[f](diff) for f in linear], 1).to(device=device, dtype=dtype)


class _SoftTileState:
    """Per-pixel quantities shared by the forward and backward of :class:`_SoftTileSums` (no autograd)."""

    def __init__(self, x, levels, width, window, nh, nw, joint):
        self._x, self._levels, self._width = x, levels, width
        lower, t = _soft_ramp(x.detach(), levels, width)
        n_img = x.shape[0]
        self.n_tiles = n_img * nh * nw
        index_dtype = _index_dtype(self.n_tiles, levels)
        self.lev_tiles = _tiled(lower.to(index_dtype), window, nh, nw)
        self.lower_tiles = _tiled(lower, window, nh, nw)  # the same levels, as floats
        self.t_tiles = _tiled(t, window, nh, nw)
        tile_index = torch.arange(self.n_tiles, device=x.device, dtype=index_dtype).view(n_img, nh, 1, nw, 1)
        if joint:  # a pair's corner cell: tile * L^2 + a_p * L + a_q
            self._first, self._sign = tile_index * (levels * levels) + self.lev_tiles * levels, 1
        else:  # a pair's difference bin: tile * (2L - 1) + (L - 1) + a_p - a_q
            self._first, self._sign = tile_index * (2 * levels - 1) + (self.lev_tiles + (levels - 1)), -1

    def slope(self) -> torch.Tensor:
        """``dt/dx``: ``levels / width`` where the ramp is not clamped (bounds included, as ``torch.clamp``'s gradient)."""
        edge = torch.clamp(torch.round(self._x * self._levels), 1, self._levels - 1)
        ramp = (self._x - edge / self._levels) * (self._levels / self._width) + 0.5
        return ((ramp >= 0) & (ramp <= 1)).to(self._x.dtype) * (self._levels / self._width)

    def key(self, offset: tuple[int, int]) -> torch.Tensor:
        first, _ = _tile_pairs(self._first, offset)
        _, a_q = _tile_pairs(self.lev_tiles, offset)
        return (first + a_q if self._sign > 0 else first - a_q).reshape(-1)  # contiguous: no copy


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
    return _flat_safe_correlation(cov, var_i, var_j, flat)


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
    return _flat_safe_correlation(cov, var_i, var_j, flat)


def _flat_safe_correlation(
    cov: torch.Tensor, var_i: torch.Tensor, var_j: torch.Tensor, flat: torch.Tensor
) -> torch.Tensor:
    """``cov / sqrt(var_i var_j)``, and 1 where ``flat`` (scikit-image's rule), with finite gradients there."""
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
        _, nh, nw, offsets, plan = _validate(x, levels, distance, angles, window, stride, soft, width)
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
