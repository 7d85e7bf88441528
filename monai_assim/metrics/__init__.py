"""Metrics of domain assimilation: how far the texture and colour modules moved the images."""

from monai_assim.metrics.assimilation import (
    AssimilationMovement,
    assimilation_distances,
    chroma,
    grey,
    grey_level_map,
)

__all__ = ["AssimilationMovement", "assimilation_distances", "chroma", "grey", "grey_level_map"]
from monai_assim.metrics.glcm_invariance import GREY_LEVEL_MAPS, glcm_invariance

__all__ += ["GREY_LEVEL_MAPS", "glcm_invariance"]
