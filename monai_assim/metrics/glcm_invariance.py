"""
What the GLCM loss does not see: the change of the paper's five GLCM features, and of the GLCM loss,
under grey-level maps of an image (an intensity inversion, gamma curves).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from monai_assim.glcm import glcm_features
from monai_assim.losses.glcm_loss import GLCMLoss

__all__ = ["GREY_LEVEL_MAPS", "glcm_invariance"]

#: name -> grey-level map on [0, 1]: the inversion and two gamma curves (all monotone)
GREY_LEVEL_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "inversion 1-x": lambda x: 1.0 - x,
    "gamma 0.5": lambda x: x.clamp_min(0).sqrt(),
    "gamma 2": lambda x: x * x,
}


def glcm_invariance(
    x: torch.Tensor,
    maps: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    glcm_loss: GLCMLoss | None = None,
) -> dict[str, dict[str, float]]:
    r"""
    For each grey-level map :math:`g` (default :data:`GREY_LEVEL_MAPS`), how much the paper's GLCM features
    and the GLCM loss change when the grey images ``x`` ``(B, 1, H, W)`` on [0, 1] become :math:`g(x)`:

    - ``<feature>``: :math:`\mathrm{mean}|f(g(x)) - f(x)| / \mathrm{std}(f(x))`, hard-quantised features with
      the loss's levels, distance, angles and windows, the mean and the std over images, angles and
      windows (the loss's ``target_std`` scale): 0 means the feature does not see the map;
    - ``max_feature_change``: the largest of those;
    - ``glcm_loss``: the (soft, differentiable) GLCM loss ``glcm_loss(g(x), x)``, per-image mean;
    - ``grey_shift``: mean :math:`|g(x) - x|`, how far the map moved the grey levels (on [0, 1]).

    ``glcm_loss`` defaults to :class:`~monai_assim.losses.GLCMLoss` with its defaults (the bundles').
    """
    loss = glcm_loss if glcm_loss is not None else GLCMLoss()
    args = {k: v for k, v in loss.glcm_args.items() if k not in ("soft", "width")}
    maps = GREY_LEVEL_MAPS if maps is None else maps
    x = x.float()
    ref = glcm_features(x, soft=False, **args)  # (B, 1, F, A, nH, nW)
    scale = ref.transpose(0, 2).flatten(1).std(1).clamp_min(1e-12)  # per feature
    out: dict[str, dict[str, float]] = {}
    for name, g in maps.items():
        y = g(x).clamp(0, 1)
        f = glcm_features(y, soft=False, **args)
        change = (f - ref).abs().transpose(0, 2).flatten(1).mean(1) / scale
        row = {feat: float(change[i]) for i, feat in enumerate(loss.features)}
        row["max_feature_change"] = float(change.max())
        with torch.no_grad():
            reduction, loss.reduction = loss.reduction, "mean"
            try:
                row["glcm_loss"] = float(loss(y, x))
            finally:
                loss.reduction = reduction
        row["grey_shift"] = float((y - x).abs().mean())
        out[name] = row
    return out
