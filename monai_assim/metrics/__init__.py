"""Metrics of domain assimilation (how far T and C moved the images) and of validation (robust accuracy, predicted classes)."""

from monai_assim.metrics.assimilation import (
    MOVEMENT_KEYS,
    AssimilationMovement,
    assimilation_distances,
    assimilation_movement,
    chroma,
    grey,
    grey_level_map,
)
from monai_assim.metrics.glcm_invariance import GREY_LEVEL_MAPS, glcm_invariance
from monai_assim.metrics.predicted_classes import PredictedClassCount
from monai_assim.metrics.robust_accuracy import ROBUST_VALIDATION_ATTACKS, RobustAccuracy, stratified_mask

__all__ = [
    "AssimilationMovement",
    "MOVEMENT_KEYS",
    "GREY_LEVEL_MAPS",
    "PredictedClassCount",
    "ROBUST_VALIDATION_ATTACKS",
    "RobustAccuracy",
    "assimilation_distances",
    "assimilation_movement",
    "chroma",
    "glcm_invariance",
    "grey",
    "grey_level_map",
    "stratified_mask",
]
