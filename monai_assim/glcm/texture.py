"""
GLCM texture features of every window (:func:`glcm_features`) and the paper's SOT matrix (:func:`sot_matrix`).

Non-overlapping tiles (``stride == window``, the default) take the tile path (:mod:`monai_assim.glcm.tiles`,
:mod:`monai_assim.glcm.soft_tiles`), which never forms the per-window matrices; overlapping windows take
the matrix path (:mod:`monai_assim.glcm.matrix`). Both give the features of
:func:`~monai_assim.glcm.features.glcm_features_from_matrix` applied to :func:`~monai_assim.glcm.glcm`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_assim.glcm.features import (
    JOINT_FEATURES,
    LINEAR_WEIGHTS,
    PAPER_FEATURES,
    check_features,
    correlation_from_moments,
    glcm_features_from_matrix,
)
from monai_assim.glcm.matrix import per_offset
from monai_assim.glcm.offsets import DEFAULT_ANGLES, n_pairs
from monai_assim.glcm.soft_tiles import SoftTileSums
from monai_assim.glcm.tiles import hard_tile_stats, split_stats
from monai_assim.glcm.validation import validate

__all__ = ["glcm_features", "sot_matrix"]


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
    Features of non-overlapping tiles for the canonical ``offsets``: ``(N, O, nH, nW, F)``.

    - With asm, energy or entropy, everything comes from the joint matrices ``C`` of the tiles: the
      features linear in ``P`` as ``C @ W``, asm as :math:`\\langle C, C \\rangle / N_o^2`, the entropy of
      :math:`C / N_o`, and the moments of correlation.
    - Otherwise the linear features come from per-tile histograms of the level difference, and the moments
      of correlation from per-tile sums of the levels over the first and the second pixels.
    - Correlation is :func:`~monai_assim.glcm.features.correlation_from_moments`, with
      :math:`E[ij] = (E[i^2] + E[j^2] - \\mathrm{contrast}) / 2`.

    Hard statistics come from :func:`~monai_assim.glcm.tiles.hard_tile_stats`, soft ones from
    :class:`~monai_assim.glcm.soft_tiles.SoftTileSums` (differentiable).
    """
    flat = x.reshape(-1, x.shape[-2], x.shape[-1]).contiguous()
    n_img, dtype = flat.shape[0], x.dtype
    n_tiles = n_img * nh * nw
    linear = [f for f in features if f in LINEAR_WEIGHTS]
    want_corr = "correlation" in features
    joint = any(f in JOINT_FEATURES for f in features)
    diff_names = linear + (["contrast"] if want_corr and "contrast" not in linear else [])
    want_asm = "asm" in features or "energy" in features
    want_entropy = "entropy" in features  # a joint feature
    # the statistics to compute: the pair sums of the linear features, then sum C^2 and the entropy
    names = tuple(diff_names + (["asm"] if want_asm else []) + (["entropy"] if want_entropy else []))
    if soft:
        stats, region = SoftTileSums.apply(flat, levels, width, tuple(offsets), window, nh, nw, joint, names, want_corr)
    else:
        stats, region = hard_tile_stats(flat, levels, tuple(offsets), window, nh, nw, joint, names, want_corr)
    per_offset_stats = split_stats(stats, offsets, window, diff_names, want_corr and joint, want_asm, want_entropy)

    out = []
    for o, offset in enumerate(offsets):
        vals = per_offset_stats[o]
        if "asm" in vals:
            vals["energy"] = torch.sqrt(vals["asm"])  # asm >= 1 / L^2 > 0
        if want_corr:
            if "moments" in vals:
                moments = vals["moments"]
            else:  # S_i, S_j, S_ii, S_jj from the region sums
                moments = region[:, :, 2 * o : 2 * o + 2].permute(0, 2, 1).reshape(4, n_tiles)
            vals["correlation"] = correlation_from_moments(moments, vals["contrast"], n_pairs(offset, window))
        out.append(torch.stack([vals[f].to(dtype) for f in features], -1).view(n_img, nh, nw, -1))
    return torch.stack(out, 1)


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
    GLCM texture features of every window, every requested angle and every channel: the features of
    :func:`~monai_assim.glcm.glcm_features_from_matrix` applied to the matrices of :func:`~monai_assim.glcm.glcm`.

    Arguments are those of :func:`~monai_assim.glcm.glcm`, plus ``features``, names from
    :data:`~monai_assim.glcm.SUPPORTED_FEATURES` (default: the paper's
    :data:`~monai_assim.glcm.PAPER_FEATURES`). Only the distinct offsets are computed: ``theta`` and
    ``theta + 180`` share one matrix up to transposition, and every supported feature is invariant
    under transposition, so their values are equal.

    Returns:
        features of shape ``(B, C, F, A, nH, nW)``, in the dtype and on the device of ``x``;
        differentiable with respect to ``x`` when ``soft`` is True.
    """
    features = check_features(features)
    if stride is None or stride == window:
        _, nh, nw, offsets, plan = validate(x, levels, distance, angles, window, stride, soft, width)
        values = _tile_features(x, levels, offsets, window, nh, nw, soft, width, features)
    else:
        values, plan = per_offset(
            x, levels, distance, angles, window, stride, soft, width, lambda p: glcm_features_from_matrix(p, features)
        )  # (N, O, nH, nW, F)
    index = torch.tensor([k for k, _ in plan], device=x.device)
    values = values.index_select(1, index).permute(0, 4, 1, 2, 3)  # (N, F, A, nH, nW)
    return values.reshape(*x.shape[:2], *values.shape[1:])


def sot_matrix(features: torch.Tensor) -> torch.Tensor:
    """
    The paper's "SOT" matrix: one row per window, one column per (feature, angle) pair,
    ``SOT[b, c, r * nW + s, f * A + a] = features[b, c, f, a, r, s]``.

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
