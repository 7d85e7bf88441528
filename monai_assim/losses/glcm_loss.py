"""The GLCM texture-preservation loss of domain assimilation (Chen & Luo, PAKDD 2024)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.utils import LossReduction, look_up_option
from torch.nn.modules.loss import _Loss

from monai_assim.glcm import DEFAULT_ANGLES, PAPER_FEATURES, check_features, glcm_features
from monai_assim.utils.image import LUMA_BT601, rgb_to_grey

__all__ = ["GLCMLoss", "feature_ranges"]

# tolerance on the [0, 1] range of the inputs before they are clamped (float rounding of RGB -> gray)
_RANGE_TOL = 1e-4


def feature_ranges(levels: int) -> dict[str, float]:
    """
    The width ``max - min`` of the attainable values of each GLCM feature at ``levels`` gray levels:
    asm on ``[1/L^2, 1]``, energy on ``[1/L, 1]``, contrast on ``[0, (L-1)^2]``, dissimilarity on
    ``[0, L-1]``, homogeneity on ``[1/L, 1]``, homogeneity_skimage on ``[1/(1+(L-1)^2), 1]``,
    correlation on ``[-1, 1]``, entropy on ``[0, 2 ln L]``.
    """
    n = float(levels)
    return {
        "asm": 1.0 - 1.0 / n**2,
        "energy": 1.0 - 1.0 / n,
        "contrast": (n - 1.0) ** 2,
        "dissimilarity": n - 1.0,
        "homogeneity": 1.0 - 1.0 / n,
        "homogeneity_skimage": 1.0 - 1.0 / (1.0 + (n - 1.0) ** 2),
        "correlation": 2.0,
        "entropy": 2.0 * math.log(n),
    }


class GLCMLoss(_Loss):
    """
    Texture-preservation loss between a (gray or RGB) prediction and a gray target:

    .. math::

        \\ell(\\hat{x}, x) = \\max_{w} \\sum_{f, \\theta}
            \\frac{|f_{\\theta, w}(\\mathrm{gray}(\\hat{x})) - f_{\\theta, w}(x)|}{s_f}

    for each image, where ``w`` runs over the windows, ``f`` over the GLCM features, ``theta`` over the
    angles, and ``s_f`` is the per-feature normalisation. The paper takes the maximum over windows
    (``window_reduction="max"``); ``"mean"`` averages them instead. Features come from soft (differentiable)
    co-occurrence matrices, see :func:`monai_assim.glcm.glcm_features` and ``docs/losses.md``.

    The features are computed with autocast disabled, in float32 (float64 for float64 inputs).
    """

    def __init__(
        self,
        levels: int = 16,
        distance: int = 3,
        angles: Sequence[float] = DEFAULT_ANGLES,
        window: int = 20,
        stride: int | None = None,
        features: Sequence[str] = PAPER_FEATURES,
        width: float = 1.0,
        window_reduction: str = "max",
        normalization: str = "target_std",
        luma_weights: Sequence[float] = LUMA_BT601,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        """
        Args:
            levels: gray levels of the co-occurrence matrices (16: see ``docs/losses.md``).
            distance: pixel distance of the pairs.
            angles: angles in degrees (default the paper's eight).
            window: side of the square windows; ``stride`` the step between them (``None``: ``window``).
                Partial tiles at the bottom and right borders are dropped.
            features: GLCM feature names (default the paper's asm, contrast, homogeneity, correlation,
                dissimilarity).
            width: width of the soft quantisation kernel, in gray levels, in (0, 1].
            window_reduction: ``"max"`` (the paper) or ``"mean"`` over the windows of an image.
            normalization: ``"target_std"`` (default) divides each feature difference by the standard
                deviation of that feature of the target over the batch, angles and windows (detached,
                at least 1e-3 of the feature's range); ``"range"`` by the feature's theoretical range
                (:func:`feature_ranges`); ``"none"`` keeps raw differences. See ``docs/losses.md``.
            luma_weights: (R, G, B) weights that turn a 3-channel prediction into gray (ITU-R BT.601).
            reduction: {``"none"``, ``"mean"``, ``"sum"``} over the batch; ``"none"`` returns shape ``(B,)``.
        """
        super().__init__(reduction=LossReduction(reduction).value)
        self.features = check_features(features)
        self.window_reduction = look_up_option(window_reduction, ("max", "mean"))
        self.normalization = look_up_option(normalization, ("target_std", "range", "none"))
        if len(luma_weights) != 3:
            raise ValueError(f"luma_weights must hold 3 (R, G, B) weights, got {luma_weights}.")
        self.glcm_args = {
            "levels": levels,
            "distance": distance,
            "angles": tuple(angles),
            "window": window,
            "stride": stride,
            "features": self.features,
            "soft": True,
            "width": width,
        }
        scale = [feature_ranges(levels)[f] if self.normalization != "none" else 1.0 for f in self.features]
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
        self.register_buffer("luma", torch.tensor(luma_weights, dtype=torch.float32), persistent=False)

    def _gray(self, img: torch.Tensor, name: str, channels: tuple[int, ...]) -> torch.Tensor:
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(img).__name__}.")
        if img.ndim != 4 or img.shape[1] not in channels:
            raise ValueError(f"{name} must have shape (B, C, H, W) with C in {channels}, got {tuple(img.shape)}.")
        if not img.is_floating_point():
            raise TypeError(f"{name} must be floating point with values on [0, 1], got dtype {img.dtype}.")
        img = img.to(torch.promote_types(img.dtype, torch.float32))
        lo, hi = (float(v) for v in torch.aminmax(img.detach()))
        if not (-_RANGE_TOL <= lo and hi <= 1.0 + _RANGE_TOL):
            raise ValueError(f"{name} values must lie on [0, 1], got min {lo} and max {hi}.")
        if img.shape[1] == 3:
            img = rgb_to_grey(img, self.luma)
        return img.clamp(0.0, 1.0)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            pred: ``(B, 3, H, W)`` RGB or ``(B, 1, H, W)`` gray, on [0, 1]; gradients flow into it.
            target: ``(B, 1, H, W)`` gray on [0, 1] (treated as a constant).

        Returns:
            a scalar for ``reduction`` ``"mean"``/``"sum"``, else the per-image losses ``(B,)``.
        """
        device_type = pred.device.type if isinstance(pred, torch.Tensor) else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            gray = self._gray(pred, "pred", (1, 3))
            ref = self._gray(target, "target", (1,))
            if gray.shape[0] != ref.shape[0] or gray.shape[2:] != ref.shape[2:]:
                raise ValueError(
                    f"pred and target must share batch and spatial sizes, got {tuple(pred.shape)} "
                    f"and {tuple(target.shape)}."
                )
            f_pred = glcm_features(gray, **self.glcm_args)  # (B, 1, F, A, nH, nW)
            with torch.no_grad():
                f_ref = glcm_features(ref, **self.glcm_args)
            scale = self.scale.to(gray)
            if self.normalization == "target_std":
                # spread of each feature of the target over the batch, angles and windows; floored at
                # 1e-3 of the feature's range so that flat targets stay finite
                scale = torch.maximum(f_ref.transpose(0, 2).flatten(1).std(1), 1e-3 * scale)
            diff = (f_pred - f_ref).abs()[:, 0] / scale.view(-1, 1, 1, 1)
            per_window = diff.sum((1, 2)).flatten(1)  # (B, nH * nW)
            per_image = per_window.amax(1) if self.window_reduction == "max" else per_window.mean(1)
        if self.reduction == LossReduction.MEAN.value:
            return per_image.mean()
        if self.reduction == LossReduction.SUM.value:
            return per_image.sum()
        return per_image
