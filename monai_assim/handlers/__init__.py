"""Ignite handlers of monai_assim."""

from monai_assim.handlers.adversarial_robustness import (
    DEFAULT_ATTACKS,
    RESULT_COLUMNS,
    AdversarialRobustnessHandler,
    eps_tag,
    robustness_metric_names,
)
from monai_assim.handlers.checkpoint import AtomicCheckpointSaver, atomic_torch_save, checkpoint_objects
from monai_assim.handlers.prediction_saver import ERRORS_COLUMNS, PredictionSaver, prediction_columns

__all__ = [
    "AdversarialRobustnessHandler",
    "AtomicCheckpointSaver",
    "atomic_torch_save",
    "checkpoint_objects",
    "DEFAULT_ATTACKS",
    "ERRORS_COLUMNS",
    "PredictionSaver",
    "RESULT_COLUMNS",
    "eps_tag",
    "prediction_columns",
    "robustness_metric_names",
]
