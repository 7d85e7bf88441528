"""Losses of domain assimilation."""

from .assimilation_loss import AssimilationLoss
from .glcm_loss import GLCMLoss, feature_ranges

__all__ = ["AssimilationLoss", "GLCMLoss", "feature_ranges"]
