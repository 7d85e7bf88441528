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
    n_pairs = _n_pairs(offset, window)
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
    element of two shifted views (:func:`_tile_pairs`), so per-tile sums over pairs are reductions. The
    images are processed in chunks (:func:`_chunk_images`), every offset of a chunk before the next chunk,
    with keys relative to the chunk, so that a chunk's keys, products and accumulators stay in cache.

    - With asm, energy or entropy, the joint matrices ``C`` of a chunk are accumulated (one
      ``scatter_add_`` per pair; soft: four, at the corners of the pair's memberships) and everything
      comes from them: the features linear in ``P`` (contrast, dissimilarity, both homogeneities) as
      ``C @ W`` (:func:`_joint_table`); asm as ``<C, C>``; entropy; the moments of correlation as ``C``
      times the weights ``i, j, i^2, j^2`` (hard: whole numbers, exact) or, soft, from the marginals of
      ``C`` about the level of the tile's top-left pixel (:func:`_centred_moments`).
    - Otherwise the linear features come from a per-tile histogram of the level difference
      ``D = a_p - a_q`` (soft: of ``1``, ``t_p``, ``t_q`` and ``t_p t_q``) times the weights of
      :func:`_difference_table`, and the moments of correlation from per-tile sums of the level ``i``
      (soft: ``a + t``) and of ``E[i^2]`` (soft: ``(a + t)^2 + t (1 - t)``) over the first and over the
      second pixels (:func:`_region_sums`), shifted by the tile's top-left level.
    - Correlation is ``cov / sqrt(var_i var_j)`` with ``E[ij] = (E[i^2] + E[j^2] - contrast) / 2``
      (:func:`_correlation_from_moments`, in float64).

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
    diff_names = linear + (["contrast"] if want_corr and "contrast" not in linear else [])
    want_asm = "asm" in features or "energy" in features

    if soft:
        # per-tile statistics from the custom autograd function: the features linear in P (as sums over
        # pairs), and the unnormalised sum C_ij^2 and entropy of the joint matrix where asked
        joint = want_joint
        names = diff_names + (["asm"] if want_asm else []) + (["entropy"] if "entropy" in features else [])
        stats, region_sums = _SoftTileSums.apply(flat, lv, width, tuple(offsets), window, nh, nw, joint, tuple(names), want_corr)
        per_offset = _split_stats(stats, offsets, window, diff_names, want_corr and joint, want_asm, "entropy" in features)
    else:
        # hard sums are whole numbers below window^2 (L - 1)^2: exact in float32 while that is below 2**24
        exact32 = window * window * (lv - 1) ** 2 < 2**24
        acc = dtype if (dtype == torch.float64 or exact32) else torch.float64
        level = torch.floor(flat.detach() * lv).clamp_(0, lv - 1)  # quantize(), kept as floats
        lev_tiles = _tiled(level.to(torch.int32), window, nh, nw)
        if want_joint:
            # everything from the joint counts of a chunk of images at a time: the linear features and the
            # moments of correlation are linear in them (one matmul with _joint_table), asm and entropy
            # are reductions; counts are whole numbers, so the moments are exact
            n_cells = lv * lv
            table = _joint_table(lv, diff_names, want_corr)
        else:
            n_cells = nd
            table = _difference_table(lv, diff_names, False)
            region_sums = _region_sums(_tiled(level, window, nh, nw), None, offsets, acc) if want_corr else None
        n_table = table.shape[1]
        table = _column_major(table.to(device=device, dtype=acc))
        chunk = _chunk_images(flat.shape[-2] * flat.shape[-1], nh * nw, n_cells)
        base = _chunk_tile_index(n_img, chunk, nh, nw, device)
        if want_joint:  # a pair's cell: tile * L^2 + a_p * L + a_q
            first, combine = torch.add(base * n_cells, lev_tiles, alpha=lv), torch.add
        else:  # a pair's difference bin: tile * (2L - 1) + (L - 1) + a_p - a_q
            first, combine = torch.add(base * nd + (lv - 1), lev_tiles), torch.sub
        n_stats = n_table + want_asm + ("entropy" in features and want_joint)
        stats = torch.empty(len(offsets), n_tiles, n_stats, dtype=acc, device=device)
        buffer = torch.empty(chunk * nh * nw * n_cells, dtype=acc, device=device)
        ones = torch.ones(chunk * nh * window * nw * window, dtype=acc, device=device)
        keys = torch.empty(ones.shape, dtype=torch.int64, device=device)
        for s in range(0, n_img, chunk):
            e = min(s + chunk, n_img)
            n_chunk = (e - s) * nh * nw
            for o, offset in enumerate(offsets):  # at most four canonical offsets per distance
                n_pairs = _n_pairs(offset, window)
                f_p, _ = _tile_pairs(first[s:e], offset)
                _, a_q = _tile_pairs(lev_tiles[s:e], offset)
                key = keys[: f_p.numel()].view(f_p.shape)
                combine(f_p, a_q, out=key)
                cells = buffer[: n_chunk * n_cells].zero_()
                cells = cells.scatter_add_(0, key.view(-1), ones[: key.numel()]).view(n_chunk, n_cells)
                cols = [_times_table(cells, table, n_table)] if n_table else []
                if want_asm:
                    cols.append(torch.linalg.vecdot(cells, cells).unsqueeze(-1))
                if "entropy" in features and want_joint:
                    cols.append(_entropy_of_counts(cells, n_pairs).unsqueeze(-1))
                torch.cat(cols, -1, out=stats[o, s * nh * nw : e * nh * nw])
        moments = want_corr and want_joint  # the last 4 columns of the joint table
        per_offset = _split_stats(stats, offsets, window, diff_names, moments, want_asm, "entropy" in features)

    out = []
    for o, offset in enumerate(offsets):
        vals = per_offset[o]
        n_pairs = _n_pairs(offset, window)
        if "asm" in vals:
            vals["energy"] = torch.sqrt(vals["asm"])  # asm >= 1 / L^2 > 0
        if want_corr:
            if "moments" in vals:
                moments = vals["moments"]
            else:
                # S_i, S_j, S_ii, S_jj
                moments = region_sums[:, :, 2 * o : 2 * o + 2].permute(0, 2, 1).reshape(4, n_tiles)
            vals["correlation"] = _correlation_from_moments(moments, vals["contrast"], n_pairs)
        out.append(torch.stack([vals[f].to(dtype) for f in features], -1).view(n_img, nh, nw, -1))
    return torch.stack(out, 1)


def _n_pairs(offset: tuple[int, int], window: int) -> int:
    """The number of pairs of ``offset`` inside one ``window x window`` window, ``N_o``."""
    return (window - offset[0]) * (window - abs(offset[1]))


def _split_stats(
    stats: torch.Tensor, offsets: list, window: int, linear: list, moments: bool, asm: bool, entropy: bool
) -> list[dict[str, torch.Tensor]]:
    """
    Per offset, the features in the per-tile statistics ``(O, n_tiles, k)`` of the tile paths, whose
    columns are the pair sums of the ``linear`` features, then (``moments``) ``S_i, S_j, S_ii, S_jj``, then
    (``asm``) ``sum C^2``, then (``entropy``) the entropy; the sums are normalised by ``N_o`` (``N_o^2``).
    """
    out = []
    for o, offset in enumerate(offsets):
        n_pairs = _n_pairs(offset, window)
        vals = {f: stats[o, :, k] / n_pairs for k, f in enumerate(linear)}
        col = len(linear)
        if moments:
            vals["moments"] = stats[o, :, col : col + 4].t()
            col += 4
        if asm:
            vals["asm"] = stats[o, :, col] / (n_pairs * n_pairs)
            col += 1
        if entropy:
            vals["entropy"] = stats[o, :, col]
        out.append(vals)
    return out


# a chunk of images of the tile paths holds at most about this many pixels and this many accumulator
# cells (2 MiB in float32), so that its keys, products and matrices stay in cache through the offsets,
# while its operations stay large enough for their overhead (chunk sizes measured in docs/glcm.md)
_TILE_CHUNK_PIXELS = 1 << 19
_TILE_CHUNK_CELLS = 1 << 19


def _chunk_images(pixels_per_image: int, tiles_per_image: int, cells_per_tile: int) -> int:
    """Images per chunk of the tile paths (at least 1; chunk-relative keys stay below 2**31)."""
    by_pixels = _TILE_CHUNK_PIXELS // pixels_per_image
    by_cells = _TILE_CHUNK_CELLS // (tiles_per_image * cells_per_tile)
    chunk = max(1, min(by_pixels, by_cells))
    if chunk * tiles_per_image * cells_per_tile >= 2**31:
        raise ValueError(f"levels too large: {cells_per_tile} cells per window overflow the int32 keys.")
    return chunk


def _chunk_tile_index(n_img: int, chunk: int, nh: int, nw: int, device: torch.device) -> torch.Tensor:
    """The index of every tile within its chunk of ``chunk`` images: int32, ``(N, nH, 1, nW, 1)``."""
    local = torch.arange(chunk * nh * nw, device=device, dtype=torch.int32).view(chunk, nh, 1, nw, 1)
    return local.repeat(-(-n_img // chunk), 1, 1, 1, 1)[:n_img]


def _joint_table(levels: int, names: Sequence[str], moments: bool) -> torch.Tensor:
    """
    Weights from the cells ``(i, j)`` of a joint matrix (row ``i * L + j``) to the sums of the features
    ``names`` (linear in ``P``) and, with ``moments``, of ``i``, ``j``, ``i^2`` and ``j^2``: float64,
    ``(L * L, len(names) + 4 * moments)``.
    """
    lv = torch.arange(levels, dtype=torch.float64)
    i, j = lv[:, None].expand(levels, levels).reshape(-1), lv[None, :].expand(levels, levels).reshape(-1)
    cols = [_LINEAR_WEIGHTS[f](i - j) for f in names]
    if moments:
        cols += [i, j, i * i, j * j]
    return torch.stack(cols, 1) if cols else torch.zeros(levels * levels, 0, dtype=torch.float64)


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


class _SoftTileSums(torch.autograd.Function):
    """
    Per-tile statistics of the soft co-occurrences of non-overlapping tiles, with a hand-written backward.

    Every pixel has memberships ``(u, t) = (1 - t, t)`` on levels ``(a, a + 1)`` (:func:`_soft_lower_bin`).
    For every chunk of images (:class:`_SoftTileState`) and canonical offset, forward (no autograd graph)
    accumulates into one reused buffer either the unnormalised joint matrices ``C = sum_pairs m(p) m(q)^T``
    (``joint``; a pair adds ``u_p u_q``, ``t_p u_q``, ``u_p t_q``, ``t_p t_q`` at ``(a_p, a_q)``,
    ``(a_p + 1, a_q)``, ``(a_p, a_q + 1)``, ``(a_p + 1, a_q + 1)``: one ``scatter_add_`` each, into
    shifted views of the buffer), or the histograms over ``D = a_p - a_q`` of ``1, t_p, t_q, t_p t_q``
    (see :func:`_difference_table`), and reduces them at once to the statistics: the sums over pairs of
    the linear features of ``names``; with ``corr`` and ``joint``, the centred moments
    (:func:`_centred_moments`); ``asm``: ``sum C^2``; ``entropy``: of ``C / N_o``. Returns
    ``(O, n_tiles, k)`` and, with ``corr`` but not ``joint``, the region sums of :func:`_region_sums`
    (``(2, n_tiles, 2 O)``; otherwise an empty tensor). The per-pixel state is kept for backward.

    Backward first turns the incoming gradient into ``G = dloss/dC`` (or ``dloss/dhist``) per offset.
    ``C`` is bilinear in ``(t_p, t_q)``, so a pair contributes ``dt_p = G_p[k] + t_q G_x[k]`` and
    ``dt_q = G_q[k] + t_p G_x[k]``, with ``k`` the pair's corner cell or bin and ``G_p, G_q, G_x`` the
    differences of ``G`` along rows, columns and both (joint) or its ``t_p, t_q, t_p t_q`` channels
    (histograms): three gathers per pair. They are added to one gradient tensor of the image through
    in-place views (the first and the second pixels of the pairs), which is finally multiplied by
    ``dt/dx`` (:meth:`_SoftTileState.slope`). Double backward is not supported.
    """

    @staticmethod
    def forward(ctx, x, levels, width, offsets, window, nh, nw, joint, names, corr):
        ctx.set_materialize_grads(False)
        state = _SoftTileState(x, levels, width, window, nh, nw, joint)
        lv, n_tiles, dtype, device = levels, state.n_tiles, x.dtype, x.device
        table = _stat_table(lv, names, joint, dtype, device)
        keep = ctx.needs_input_grad[0] and joint and ("asm" in names or "entropy" in names)
        n_cells = lv * lv if joint else 2 * lv - 1
        buffer = torch.empty(4 if not joint else 1, state.chunk * nh * nw * n_cells, dtype=dtype, device=device)
        moments = corr and joint  # the moments of correlation from the joint matrices (4 columns)
        n_table = 0 if table is None else table.shape[1]
        padded = None if table is None else _column_major(table)
        n_stats = n_table + 4 * moments + ("asm" in names) + ("entropy" in names)
        stats = torch.empty(len(offsets), n_tiles, n_stats, dtype=dtype, device=device)
        saved = torch.empty(len(offsets), n_tiles, n_cells, dtype=dtype, device=device) if keep else None
        for images, tiles in state.chunks():
            t_tiles = state.t_tiles[images]
            u_tiles = 1 - t_tiles if joint else None
            centre = state.centre(images) if moments else None  # the same for every offset
            n_chunk = t_tiles.shape[0] * nh * nw
            for o, offset in enumerate(offsets):
                n_pairs = _n_pairs(offset, window)
                key = state.key(offset, images)
                t_p, t_q = _tile_pairs(t_tiles, offset)
                buf = buffer[:, : n_chunk * n_cells].zero_()
                cols = []
                if joint:
                    u_p, u_q = _tile_pairs(u_tiles, offset)
                    buf = buf[0]
                    buf.scatter_add_(0, key, (u_p * u_q).reshape(-1))
                    buf[lv:].scatter_add_(0, key, (t_p * u_q).reshape(-1))  # cell (a_p + 1, a_q)
                    buf[1:].scatter_add_(0, key, (u_p * t_q).reshape(-1))  # cell (a_p, a_q + 1)
                    buf[lv + 1 :].scatter_add_(0, key, (t_p * t_q).reshape(-1))  # cell (a_p + 1, a_q + 1)
                    cells = buf.view(n_chunk, n_cells)
                    if table is not None:
                        cols.append(_times_table(cells, padded, n_table))
                    if moments:
                        cols.append(_centred_moments(cells, centre, lv))
                    if "asm" in names:
                        cols.append(torch.linalg.vecdot(cells, cells).unsqueeze(-1))
                    if "entropy" in names:
                        cols.append(_entropy_of_counts(cells, n_pairs).unsqueeze(-1))
                    if keep:
                        saved[o, tiles] = cells
                else:
                    buf[0].scatter_add_(0, key, torch.ones(key.numel(), dtype=dtype, device=device))
                    buf[1].scatter_add_(0, key, t_p.reshape(-1))
                    buf[2].scatter_add_(0, key, t_q.reshape(-1))
                    buf[3].scatter_add_(0, key, (t_p * t_q).reshape(-1))
                    hist = buf.view(4, n_chunk, -1).permute(1, 2, 0).reshape(n_chunk, -1)  # (tiles, bins x channels)
                    cols.append(_times_table(hist, padded, n_table))
                torch.cat(cols, -1, out=stats[o, tiles])
        if corr and not joint:  # with the joint matrices, the moments are among the stats
            region = _region_sums(state.lower_tiles, state.t_tiles, list(offsets), dtype)
        else:
            region = torch.zeros(0, dtype=dtype, device=device)
        ctx.save_for_backward(x, *(() if saved is None else (saved,)))
        ctx.state = state if ctx.needs_input_grad[0] else None
        ctx.args = (levels, width, offsets, window, nh, nw, joint, names, corr)
        return stats, region

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_stats, grad_region):
        x, *saved = ctx.saved_tensors
        levels, width, offsets, window, nh, nw, joint, names, corr = ctx.args
        state = ctx.state
        lv = levels
        grad_t = torch.zeros_like(x)
        grad_tiles = _tiled(grad_t, window, nh, nw)
        if grad_stats is not None:
            table = _stat_table(lv, names, joint, x.dtype, x.device)
            n_lin = 0 if table is None else table.shape[1]
            for images, tiles in state.chunks():
                t_tiles = state.t_tiles[images]
                if corr and joint:  # the levels about the tiles' centres, d and d^2 (see _centred_moments)
                    d = torch.arange(lv, dtype=x.dtype, device=x.device) - state.centre(images).unsqueeze(-1)
                    d2 = d * d
                for o, offset in enumerate(offsets):
                    n_pairs = _n_pairs(offset, window)
                    g_stat = grad_stats[o, tiles]  # (tiles of the chunk, len(names))
                    # G = dloss / d(joint cells) or d(histogram bins), (tiles of the chunk, cells)
                    if table is not None:
                        g = g_stat[:, :n_lin] @ table.t()
                    else:
                        g = torch.zeros(g_stat.shape[0], lv * lv, dtype=x.dtype, device=x.device)
                    col = n_lin
                    if corr and joint:  # moments S_i, S_j, S_ii, S_jj
                        g_m = g_stat[:, col : col + 4]
                        g_rows = torch.addcmul(g_m[:, 0:1] * d, g_m[:, 2:3], d2)
                        g_cols = torch.addcmul(g_m[:, 1:2] * d, g_m[:, 3:4], d2)
                        g.view(-1, lv, lv).add_(g_rows.unsqueeze(-1)).add_(g_cols.unsqueeze(-2))
                        col += 4
                    if "asm" in names:
                        g.addcmul_(saved[0][o, tiles], 2 * g_stat[:, col : col + 1])
                        col += 1
                    if "entropy" in names:
                        p = saved[0][o, tiles] / n_pairs
                        dent = -(torch.log(torch.where(p > 0, p, torch.ones_like(p))) + (p > 0).to(p.dtype)) / n_pairs
                        g.addcmul_(dent, g_stat[:, col : col + 1])
                    t_p, t_q = _tile_pairs(t_tiles, offset)
                    key = state.key(offset, images, wide=False)
                    if joint:
                        # differences of G along rows, columns and both at the corners (flat shifted views;
                        # entries past a row or a tile are garbage but never gathered, as a_p, a_q <= L - 2)
                        g = g.view(-1)
                        m = g.numel()
                        diffs = torch.empty(3, m, dtype=g.dtype, device=g.device)
                        torch.sub(g[lv:], g[:-lv], out=diffs[0, : m - lv])
                        torch.sub(g[1:], g[:-1], out=diffs[1, : m - 1])
                        torch.sub(diffs[0, 1 : m - lv], diffs[0, : m - lv - 1], out=diffs[2, : m - lv - 1])
                    else:
                        diffs = g.view(-1, 4).t()[1:]  # channels t_p, t_q, t_p t_q, (3, tiles * (2L - 1))
                    g_p, g_q, g_x = (diffs[c].index_select(0, key).view(t_p.shape) for c in range(3))
                    first, second = _tile_pairs(grad_tiles[images], offset)
                    first.add_(torch.addcmul(g_p, t_q, g_x))
                    second.add_(torch.addcmul(g_q, t_p, g_x))
        if corr and not joint and grad_region is not None:
            rows, cols = _region_masks(list(offsets), window, grad_region.dtype, grad_region.device)
            g = grad_region.view(2, x.shape[0], nh, 1, nw, -1) * rows.view(window, 1, -1)
            g = g @ cols.t()  # (2, N, nH, window, nW, window): the layout of the tiles
            t_tiles = state.t_tiles
            mean_level = state.lower_tiles + t_tiles
            centred = mean_level - mean_level[..., :1, :, :1]  # the shift is a constant (detached)
            grad_tiles.add_(g[0] + g[1] * (2 * centred + 1 - 2 * t_tiles))
        return (grad_t.mul_(state.slope()),) + (None,) * 9


def _stat_table(
    levels: int, names: tuple, joint: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    """
    Weights from the joint cells (:func:`_joint_table`) or from the soft difference histograms
    (:func:`_difference_table`) to the linear features of ``names``.
    """
    linear = [f for f in names if f in _LINEAR_WEIGHTS]
    if joint:
        table = _joint_table(levels, linear, False)
    elif linear:
        table = _difference_table(levels, linear, True)
    else:
        return None
    return table.to(device=device, dtype=dtype) if table.shape[1] else None


def _column_major(table: torch.Tensor) -> torch.Tensor:
    """
    The same ``(cells, k)`` matrix stored column by column, with zero columns appended up to 4 or to a
    multiple of 16: the shapes for which the CPU BLAS of torch 2.14 multiplies ``(n, cells) @ table``
    fastest (measured: ``(484, 1024) @ (1024, k)`` takes 150 us row-major with 7 columns, 109 us column-major
    with 16; ``(3872, 256) @ (256, 4)`` 0.58 ms row-major, 0.13 ms column-major). Use :func:`_times_table`.
    """
    k = table.shape[1]
    width = 4 if k <= 4 else -(-k // 16) * 16
    return F.pad(table, (0, width - k)).t().contiguous().t()


def _times_table(m: torch.Tensor, table: torch.Tensor, k: int) -> torch.Tensor:
    """``m @ table[:, :k]`` for a table from :func:`_column_major` (``k`` its columns before padding)."""
    return (m @ table)[:, :k]


class _SoftTileState:
    """
    Per-pixel quantities of :class:`_SoftTileSums` (no autograd), computed once in forward and kept for
    backward: levels ``a`` and ramps ``t`` (:func:`_soft_lower_bin`) as tiles, and the key bases.
    """

    def __init__(self, x, levels, width, window, nh, nw, joint):
        x = x.detach()
        n_img = x.shape[0]
        self.levels, self.width, self.joint = levels, width, joint
        self.n_img, self.tiles_per_image = n_img, nh * nw
        self.n_tiles = n_img * nh * nw
        n_cells = levels * levels if joint else 2 * levels - 1
        self.chunk = min(n_img, _chunk_images(x.shape[-2] * x.shape[-1], nh * nw, n_cells))
        # _soft_lower_bin without autograd, in few passes over the image: edge = clamp(round(x L), 1, L - 1),
        # a = edge - 1, ramp = (x L - edge) / width + 1/2 (unclamped, kept for dt/dx), t = clamp(ramp, 0, 1)
        scaled = x * levels
        edge = torch.round(scaled).clamp_(1, levels - 1)
        self.ramp = scaled.sub_(edge)
        if width != 1.0:
            self.ramp.div_(width)
        self.ramp.add_(0.5)
        lower = edge.sub_(1)
        t = self.ramp.clamp(0.0, 1.0)
        self.lower_tiles = _tiled(lower, window, nh, nw)  # the levels, as floats
        self.lev_tiles = _tiled(lower.to(torch.int32), window, nh, nw)
        self.t_tiles = _tiled(t, window, nh, nw)
        # key bases with tiles numbered within their chunk of images, so that a pair's key is one addition
        # (int32, written as int64, scatter_add_'s index type) and indexes a buffer of one chunk
        base = _chunk_tile_index(n_img, self.chunk, nh, nw, x.device)
        if joint:  # a pair's corner cell: tile * L^2 + a_p * L + a_q
            self._first = torch.add(base * (levels * levels), self.lev_tiles, alpha=levels)
        else:  # a pair's difference bin: tile * (2L - 1) + (L - 1) + a_p - a_q
            self._first = torch.add(base * (2 * levels - 1) + (levels - 1), self.lev_tiles)
        self._key = None

    def centre(self, images: slice) -> torch.Tensor:
        """The level ``a`` of the top-left pixel of every tile of ``images``, flat (the moments' centre)."""
        return self.lower_tiles[images][:, :, 0, :, 0].reshape(-1)

    def chunks(self):
        """``(images, tiles)`` slices of the chunks of images and of their tiles (numbered image-major)."""
        for s in range(0, self.n_img, self.chunk):
            e = min(s + self.chunk, self.n_img)
            yield slice(s, e), slice(s * self.tiles_per_image, e * self.tiles_per_image)

    def slope(self) -> torch.Tensor:
        """``dt/dx``: ``levels / width`` where the ramp is not clamped (bounds included, as ``torch.clamp``'s gradient)."""
        inside = (self.ramp >= 0) & (self.ramp <= 1)
        return inside.to(self.ramp.dtype).mul_(self.levels / self.width)

    def key(self, offset: tuple[int, int], images: slice, wide: bool = True) -> torch.Tensor:
        """
        The chunk-relative key of every in-tile pair of ``offset`` in the images ``images``, flat: int64 for
        ``scatter_add_`` (``wide``), else int32 (enough for ``index_select``, and cheaper to write).
        """
        first, _ = _tile_pairs(self._first[images], offset)
        _, a_q = _tile_pairs(self.lev_tiles[images], offset)
        if not wide:
            return (first + a_q if self.joint else first - a_q).view(-1)
        if self._key is None or self._key.numel() < first.numel():
            self._key = torch.empty(first.numel(), dtype=torch.int64, device=first.device)
        out = self._key[: first.numel()].view(first.shape)
        (torch.add if self.joint else torch.sub)(first, a_q, out=out)
        return out.view(-1)


def _entropy_of_counts(cells: torch.Tensor, n_pairs: int) -> torch.Tensor:
    """``-sum p ln p`` of ``p = cells / n_pairs`` over the last dimension (``0 ln 0 = 0``)."""
    p = cells / n_pairs
    return -torch.linalg.vecdot(p, torch.log(torch.where(p > 0, p, torch.ones_like(p))))


def _centred_moments(cells: torch.Tensor, centre: torch.Tensor, levels: int) -> torch.Tensor:
    """
    The sums ``(S_i, S_j, S_ii, S_jj)`` of ``i - c`` and ``(i - c)^2`` (likewise ``j``) over joint matrices
    ``cells`` (``(n, L * L)``), ``c`` the per-matrix ``centre`` (``(n,)``): ``(n, 4)``, from the two marginals.
    Centring each window at one of its own levels keeps the sums small, so that the variances correlation
    takes from them do not cancel in float32 (the correlation does not depend on ``c``).
    """
    n = cells.shape[0]
    m = cells.view(n, levels, levels)
    marginals = torch.stack((m.sum(-1), m.sum(-2)), 1)  # (n, 2, L): of the first and of the second pixel
    d = torch.arange(levels, dtype=cells.dtype, device=cells.device) - centre.unsqueeze(-1)  # (n, L)
    sums = torch.bmm(marginals, torch.stack((d, d * d), -1))  # (n, 2, 2): [[S_i, S_ii], [S_j, S_jj]]
    return sums.transpose(1, 2).reshape(n, 4)


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
