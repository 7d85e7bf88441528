"""Losses of domain assimilation."""

from .assimilation_loss import AssimilationLoss
from .glcm_loss import LUMA_BT601, GLCMLoss, feature_ranges

__all__ = ["AssimilationLoss", "GLCMLoss", "LUMA_BT601", "feature_ranges"]
