"""
Texture features of normalised co-occurrence matrices ``P`` (``L x L``, summing to 1):

.. math::

    \\mathrm{asm} = \\sum_{ij} P_{ij}^2, \\quad
    \\mathrm{contrast} = \\sum_{ij} P_{ij} (i - j)^2, \\quad
    \\mathrm{correlation} = \\sum_{ij} P_{ij} \\frac{(i - \\mu_i)(j - \\mu_j)}{\\sigma_i \\sigma_j}, \\ \\ldots

(the full list in :func:`glcm_features_from_matrix`), and the helpers that compute them from sums over
pixel pairs instead of from ``P`` (used by the tile path).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "SUPPORTED_FEATURES",
    "PAPER_FEATURES",
    "LINEAR_WEIGHTS",
    "JOINT_FEATURES",
    "check_features",
    "glcm_features_from_matrix",
    "flat_safe_correlation",
    "correlation_from_moments",
    "centred_moments",
    "entropy_of_counts",
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

#: The features linear in ``P``, :math:`\sum_{ij} P_{ij}\, g(i - j)`: their weight ``g`` of the level difference.
LINEAR_WEIGHTS = {
    "contrast": lambda d: d**2,
    "dissimilarity": lambda d: d.abs(),
    "homogeneity": lambda d: 1.0 / (1.0 + d.abs()),
    "homogeneity_skimage": lambda d: 1.0 / (1.0 + d**2),
}
#: The features that need the joint matrix; the others follow from sums over pixel pairs.
JOINT_FEATURES = ("asm", "energy", "entropy")
# scikit-image's threshold below which a marginal standard deviation counts as zero
CORRELATION_STD_EPS = 1e-15


def check_features(features: str | Sequence[str]) -> tuple[str, ...]:
    """
    The feature names as a tuple (one name may be given as a str).

    Raises:
        TypeError: a name is not a str.
        ValueError: no name, or a name not in :data:`SUPPORTED_FEATURES`.
    """
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
    features = check_features(features)
    levels = p.shape[-1]
    out: dict[str, torch.Tensor] = {}
    linear = [f for f in features if f in LINEAR_WEIGHTS]
    if linear:
        lv = torch.arange(levels, dtype=p.dtype, device=p.device)
        diff = lv[:, None] - lv[None, :]
        weights = torch.stack([LINEAR_WEIGHTS[f](diff).reshape(-1) for f in linear], 1)  # (L*L, nlinear)
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
    """Correlation of matrices ``p`` (``(..., L, L)``) from their centred marginals (see :func:`glcm_features_from_matrix`)."""
    lv = torch.arange(p.shape[-1], dtype=p.dtype, device=p.device)
    row, col = p.sum(-1), p.sum(-2)  # marginals of i and j
    di = lv - (row * lv).sum(-1, keepdim=True)
    dj = lv - (col * lv).sum(-1, keepdim=True)
    var_i = (row * di * di).sum(-1)
    var_j = (col * dj * dj).sum(-1)
    cov = (di * (p @ dj.unsqueeze(-1)).squeeze(-1)).sum(-1)
    # a marginal on a single level has zero variance exactly; test its support rather than a rounded var
    single = ((row > 0).sum(-1) <= 1) | ((col > 0).sum(-1) <= 1)
    flat = single | (var_i < CORRELATION_STD_EPS**2) | (var_j < CORRELATION_STD_EPS**2)
    return flat_safe_correlation(cov, var_i, var_j, flat)


def flat_safe_correlation(
    cov: torch.Tensor, var_i: torch.Tensor, var_j: torch.Tensor, flat: torch.Tensor
) -> torch.Tensor:
    """``cov / sqrt(var_i var_j)``, and 1 where ``flat`` (scikit-image's rule), with finite gradients there."""
    one = torch.ones_like(var_i)
    denom = torch.sqrt(torch.where(flat, one, var_i)) * torch.sqrt(torch.where(flat, one, var_j))
    return torch.where(flat, one, cov / denom)


def correlation_from_moments(moments: torch.Tensor, contrast: torch.Tensor, n: int) -> torch.Tensor:
    """
    Correlation from sums over the ``n`` in-window pairs:

    .. math::

        n^2 \\mathrm{var}_i = n S_{ii} - S_i^2, \\quad
        S_{ij} = \\tfrac12 (S_{ii} + S_{jj} - n\\, \\mathrm{contrast}), \\quad
        n^2 \\mathrm{cov} = n S_{ij} - S_i S_j,

    ``moments = (S_i, S_j, S_ii, S_jj)`` (``(4, ...)``) the sums of the (shifted) levels of the first and
    second pixels and of their squares, ``contrast`` the mean :math:`E[(i - j)^2]`; combined in float64.
    1 where a variance is 0 (hard mode: exactly when a marginal sits on one level, the sums being whole
    numbers) or below scikit-image's threshold.
    """
    s_i, s_j, s_ii, s_jj = moments.double()
    s_ij = (s_ii + s_jj - n * contrast.double()) / 2
    var_i, var_j = n * s_ii - s_i * s_i, n * s_jj - s_j * s_j
    cov = n * s_ij - s_i * s_j
    tiny = (n * CORRELATION_STD_EPS) ** 2
    flat = (var_i <= tiny) | (var_j <= tiny)
    return flat_safe_correlation(cov, var_i, var_j, flat)


def centred_moments(cells: torch.Tensor, centre: torch.Tensor, levels: int) -> torch.Tensor:
    """
    :math:`(S_i, S_j, S_{ii}, S_{jj}) = \\sum_{ij} C_{ij}\\, (i - c,\\ j - c,\\ (i - c)^2,\\ (j - c)^2)` of
    joint matrices ``cells`` (``(n, L * L)``), ``c`` the per-matrix ``centre`` (``(n,)``): ``(n, 4)``, from
    the two marginals. Centring each window at one of its own levels keeps the sums small, so that the
    variances correlation takes from them do not cancel in float32 (the correlation does not depend on ``c``).
    """
    n = cells.shape[0]
    m = cells.view(n, levels, levels)
    marginals = torch.stack((m.sum(-1), m.sum(-2)), 1)  # (n, 2, L): of the first and of the second pixel
    d = torch.arange(levels, dtype=cells.dtype, device=cells.device) - centre.unsqueeze(-1)  # (n, L)
    sums = torch.bmm(marginals, torch.stack((d, d * d), -1))  # (n, 2, 2): [[S_i, S_ii], [S_j, S_jj]]
    return sums.transpose(1, 2).reshape(n, 4)


def entropy_of_counts(cells: torch.Tensor, n_pairs: int) -> torch.Tensor:
    """:math:`-\\sum p \\ln p` of :math:`p = C / N_o` over the last dimension (:math:`0 \\ln 0 = 0`)."""
    p = cells / n_pairs
    return -torch.linalg.vecdot(p, torch.log(torch.where(p > 0, p, torch.ones_like(p))))
