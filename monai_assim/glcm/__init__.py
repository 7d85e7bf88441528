"""
Windowed, batched and differentiable gray-level co-occurrence matrices (GLCM) in pure torch.

For an image quantised to ``L`` gray levels and an offset ``o = (dr, dc)``, the normalised, asymmetric
co-occurrence matrix of a window ``W`` is

.. math::

    P_{ij} = \\frac{1}{N_o} \\sum_{p,\\, p + o \\in W} m_i(x_p)\\, m_j(x_{p+o}),
    \\qquad N_o = \\#\\{p : p \\in W,\\ p + o \\in W\\},

where ``m(x)`` is the membership vector of a pixel: one-hot (``hard``) or a differentiable soft
assignment (``soft``). Texture features are functions of ``P`` (see :func:`glcm_features_from_matrix`).
The conventions (offsets, windows, border tiles, soft kernel) are explained in ``docs/glcm.md``.

Modules: :mod:`.offsets` (angles to offsets), :mod:`.validation` (argument checks), :mod:`.quantization`
(memberships), :mod:`.features` (the feature formulas), :mod:`.matrix` (per-window matrices, the
reference), :mod:`.tiles` and :mod:`.soft_tiles` (features of non-overlapping tiles without matrices,
hard and soft), :mod:`.texture` (:func:`glcm_features`, :func:`sot_matrix`).

This package imports only torch: the MONAI wrappers live in :mod:`monai_assim.losses` and
:mod:`monai_assim.transforms`.
"""

from __future__ import annotations

from monai_assim.glcm.features import (
    PAPER_FEATURES,
    SUPPORTED_FEATURES,
    check_features,
    glcm_features_from_matrix,
)
from monai_assim.glcm.matrix import glcm
from monai_assim.glcm.offsets import DEFAULT_ANGLES, glcm_offset
from monai_assim.glcm.quantization import quantize, soft_memberships
from monai_assim.glcm.texture import glcm_features, sot_matrix

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
    "check_features",
]
