"""The domain-assimilation training objective: cross-entropy plus GLCM texture preservation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_assim.glcm import DEFAULT_ANGLES, PAPER_FEATURES
from monai_assim.losses.glcm_loss import GLCMLoss
from monai_assim.utils import LUMA_BT601, as_class_indices

__all__ = ["AssimilationLoss"]


class AssimilationLoss(_Loss):
    """
    .. math::

        \\mathcal{L} = \\alpha\\, \\mathrm{CE}(z, y) + (1 - \\alpha)\\, \\ell_{\\mathrm{GLCM}}(C(T(x)), x)

    with ``z`` the logits, ``y`` the labels, ``C(T(x))`` the assimilated RGB image and ``x`` the original
    gray image (see :class:`GLCMLoss`). :meth:`terms` returns the total with its two terms (reduced like
    the total, detached) for logging; calling the loss returns the total alone. The default
    ``alpha`` is justified by the magnitudes of the two terms in ``docs/losses.md``.
    """

    def __init__(
        self,
        alpha: float = 0.99,
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
            alpha: weight of the cross-entropy, in [0, 1]; the GLCM term gets ``1 - alpha``.
            levels, distance, angles, window, stride, features, width, window_reduction, normalization,
                luma_weights: passed to :class:`GLCMLoss`.
            reduction: {``"none"``, ``"mean"``, ``"sum"``} over the batch, for both terms.
        """
        super().__init__(reduction=LossReduction(reduction).value)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}.")
        self.alpha = float(alpha)
        self.glcm = GLCMLoss(
            levels=levels,
            distance=distance,
            angles=angles,
            window=window,
            stride=stride,
            features=features,
            width=width,
            window_reduction=window_reduction,
            normalization=normalization,
            luma_weights=luma_weights,
            reduction=reduction,
        )

    def cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """
        The cross-entropy term alone, with this loss's label conventions and ``reduction``
        (what a trainer optimises for the vanilla variant).

        Args:
            logits: ``(B, K)``.
            labels: ``(B,)`` or ``(B, 1)`` class indices, or ``(B, K)`` one-hot / class probabilities.
        """
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] < 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"logits must have shape (B, K) with K >= 2, got {shape}.")
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}.")
        batch, classes = logits.shape
        if labels.ndim == 2 and labels.shape == (batch, classes):
            target = labels.to(logits.dtype)  # one-hot (or class probabilities)
        else:
            target = as_class_indices(labels, classes, batch_size=batch)
        return F.cross_entropy(logits, target, reduction=self.reduction)

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, assimilated: torch.Tensor, original: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            logits: ``(B, K)`` classifier outputs.
            labels: ``(B,)`` or ``(B, 1)`` class indices, or one-hot ``(B, K)``.
            assimilated: ``(B, 3, H, W)`` (or ``(B, 1, H, W)``) assimilated image on [0, 1].
            original: ``(B, 1, H, W)`` original gray image on [0, 1].

        Returns:
            ``alpha * CE + (1 - alpha) * GLCM``: a scalar, or ``(B,)`` with ``reduction="none"``.
        """
        return self.terms(logits, labels, assimilated, original)[0]

    def terms(
        self, logits: torch.Tensor, labels: torch.Tensor, assimilated: torch.Tensor, original: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """As :meth:`forward`, returning ``(loss, {"ce": ..., "glcm": ...})``, the two terms detached."""
        ce = self.cross_entropy(logits, labels)
        texture = self.glcm(assimilated, original)
        return self.alpha * ce + (1.0 - self.alpha) * texture, {"ce": ce.detach(), "glcm": texture.detach()}
